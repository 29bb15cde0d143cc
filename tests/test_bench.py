"""The CPU-vs-GPU benchmark runs end to end in quick mode (no timing assertions)."""
from __future__ import annotations

import json
import math

from gpuaug.bench import main


def test_quick_benchmark_writes_json_and_chart(tmp_path):
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    pipelines = ["torchvision-pil", "gpuaug-cpu", "dali-cpu", "gpuaug-cuda"]
    assert main(["--quick", "--images", "32", "--workers", "1", "--pipelines", ",".join(pipelines),
                 "--out", str(out), "--plot", str(png), "--no-progress"]) == 0
    report = json.loads(out.read_text())
    assert [r["pipeline"] for r in report["results"]] == pipelines
    for r in report["results"]:
        if r["status"] == "measured":
            assert r["images_per_s"] > 0 and math.isfinite(r["cpu_s_per_1000"]) and r["cpu_s_per_1000"] > 0
        else:
            assert r["status"].startswith("skipped: "), r      # a reason, never a silent drop
    assert {r["pipeline"] for r in report["results"] if r["status"] == "measured"} >= {"torchvision-pil", "gpuaug-cpu"}
    assert png.stat().st_size > 1000
    assert report["settings"]["images"] == 32
