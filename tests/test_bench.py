"""The CPU-vs-GPU benchmark (``python -m gpuaug.bench``) runs end to end in quick mode.

Nothing here asserts a speed: a benchmark's numbers are only compared side by side in one
run (``benchmarks/README.md``). These tests check that every requested pipeline is
measured or skipped with a reason, that the outputs are written and the numbers sane.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import make_image_folder

from gpuaug import bench


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """32 small JPEGs around 200x150 (some portrait, some square) in 4 classes."""
    sizes = [(150 + 4 * (k % 6), 200 - 6 * (k % 5)) for k in range(32)]    # (h, w), landscape
    for k in range(0, 32, 8):
        sizes[k] = (200, 150)                                             # portrait
    for k in range(5, 32, 8):
        sizes[k] = (170, 170)                                             # square
    return make_image_folder(tmp_path_factory.mktemp("bench") / "data", sizes, classes=("a", "b", "c", "d"))


def test_quick_run_reports_every_pipeline(tiny_folder, tmp_path):
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    code = bench.main(["--quick", "--data", str(tiny_folder), "--workers", "1", "--device", "cpu",
                       "--out", str(out), "--plot", str(png), "--no-progress"])
    report = json.loads(out.read_text())
    results = report["results"]
    assert [r["pipeline"] for r in results] == list(bench.PIPELINES)   # none dropped, in order
    assert code == 0, [r["status"] for r in results if r["status"].startswith("failed")]
    for r in results:
        if r["status"] != "measured":
            assert r["status"].startswith("skipped: ") and len(r["status"]) > len("skipped: "), r
            continue
        for key in ("images_per_s", "cpu_s_per_1000", "peak_rss_mb", "cores_busy"):
            assert math.isfinite(r[key]) and r[key] > 0, (r["pipeline"], key, r[key])
        assert r["cores_busy"] <= os.cpu_count() + 0.5                # CPU seconds per wall second
        assert r["epochs"] and all(e["images"] == 32 and e["seconds"] > 0 for e in r["epochs"])
        if r["worker_cpu_s_per_1000"] is not None:                  # workers measured, inside the total
            assert 0 < r["worker_cpu_s_per_1000"] <= r["cpu_s_per_1000"]
    status = {r["pipeline"]: r["status"] for r in results}
    # The pipelines that need no optional package always run; GPU ones say why they did not.
    assert status["torchvision-pil"] == status["gpuaug-cpu"] == "measured"
    reason = "skipped: --device cpu" if torch.cuda.is_available() else "skipped: no CUDA device"
    assert all(status[name] == reason for name in bench.CUDA_PIPELINES)
    settings = report["settings"]
    assert settings["dataset"]["images"] == 32 and settings["batch_size"] == 16 and settings["epochs"] == 2
    assert 140 <= settings["dataset"]["mean_height"] <= 210 and 140 <= settings["dataset"]["mean_width"] <= 210
    assert "worker_cpu" in report["targets"]                            # tv-pil and gpuaug-cpu both measured
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_unknown_pipeline_is_an_error(tiny_folder):
    with pytest.raises(SystemExit):
        bench.main(["--quick", "--data", str(tiny_folder), "--pipelines", "torchvision-pil,nope"])


def test_worker_cpu_clock_is_finer_than_ticks():
    """A child that burns ~30 ms of CPU is measured to the millisecond (ticks are 10 ms)."""
    child = subprocess.Popen([sys.executable, "-c", "import time, sys\n"
                              "end = time.process_time() + 0.03\n"
                              "while time.process_time() < end: pass\n"
                              "sys.stdout.write('done\\n'); sys.stdout.flush(); time.sleep(30)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "done\n"
        time.sleep(0.05)
        cpu = bench.process_cpu_seconds(child.pid)
        assert child.pid in bench.CpuSnapshot.take().workers            # found as a descendant
    finally:
        child.kill()
        child.wait()
    assert 0.03 <= cpu < 1.0                                            # interpreter start-up included
    if os.path.exists(f"/proc/{os.getpid()}/task"):
        assert abs(cpu * 100 - round(cpu * 100)) > 1e-6                # not a whole number of 10 ms ticks


def test_table_and_targets_from_results():
    results = [bench.Result("torchvision-pil", images_per_s=400.0, cpu_s_per_1000=4.5, worker_cpu_s_per_1000=4.4,
                            peak_rss_mb=1000.0),
               bench.Result("dali-cpu", images_per_s=800.0, cpu_s_per_1000=2.0, peak_rss_mb=900.0),
               bench.Result("gpuaug-cpu", images_per_s=300.0, cpu_s_per_1000=5.0, worker_cpu_s_per_1000=0.09,
                            peak_rss_mb=1100.0),
               bench.Result("gpuaug-cuda", status="skipped: no CUDA device")]
    text = bench.table(results)
    assert "0.75x" in text and "1/50" in text and "skipped: no CUDA device" in text
    t = bench.targets(results)
    assert t["worker_cpu"]["met"] and t["worker_cpu"]["ratio"] == pytest.approx(0.02)
    assert not t["cpu_vs_dali"]["met"] and t["cpu_vs_dali"]["ratio"] == pytest.approx(0.375)
    assert not t["cpu_time_vs_dali"]["met"] and t["cpu_time_vs_dali"]["ratio"] == pytest.approx(2.5)
    assert not t["cpu_vs_baseline"]["met"] and t["cpu_vs_baseline"]["ratio"] == pytest.approx(0.75)
    assert "met" in bench.targets_text(t) and "MISSED" in bench.targets_text(t)
    fast = [bench.Result("gpuaug-cpu", images_per_s=1000.0, cpu_s_per_1000=1.5, peak_rss_mb=1.0)]
    t = bench.targets(results[:2] + fast)
    assert t["cpu_vs_dali"]["met"] and t["cpu_time_vs_dali"]["met"] and t["cpu_vs_baseline"]["met"]
    assert "MISSED" not in bench.targets_text(t)


def test_cpu_path_profile_times_every_stage(tmp_path):
    """benchmarks/cpu_path_profile.py (the per-stage profile benchmarks/README.md quotes) runs."""
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "cpu_path_profile.py"
    out = tmp_path / "profile.json"
    subprocess.run([sys.executable, str(script), "--images", str(bench.QUICK_IMAGES), "--rounds", "1",
                    "--out", str(out)], check=True, capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    assert result["images"] > 50 and 0.08 < result["mean_box_share_of_image"] < 1
    times = result["ms_per_image_min"]
    assert len(times) == 6 and all(0 < t < 100 for t in times.values())
