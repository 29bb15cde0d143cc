"""``make gpu-check`` / ``python -m gpuaug.selftest --report``: exercised on CPU, where every CUDA check skips."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import torch

from gpuaug import gpu_report
from gpuaug.selftest import RUNTIME_CHECKS, main


def test_report_on_this_machine(tmp_path, capsys):
    out, png = tmp_path / "gpu_report.json", tmp_path / "gpu_report.png"
    code = main(["--report", str(out), "--plot", str(png), "--quick", "--timeout", "240"])
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    checks = report["checks"]
    assert list(checks) == ["static", "emulated", "cuda_kernels", *RUNTIME_CHECKS, "bench"]
    assert code == 0 and checks["static"]["status"] == "ok" and checks["emulated"]["status"] == "ok"
    assert checks["static"]["seconds"] > 0 and "registers" in checks["static"]["output_tail"]
    if not torch.cuda.is_available():
        assert all(checks[n]["status"] == "skipped: no GPU" for n in ["cuda_kernels", *RUNTIME_CHECKS, "bench"])
    env = report["environment"]
    assert env["packages"]["torch"] == torch.__version__.split("+")[0] and env["python"] == sys.version.split()[0]
    # What it found and what it will skip is printed before anything runs.
    assert printed.index("GPU: ") < printed.index("will run") < printed.index("-- static")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plan_names_what_is_missing():
    env = {"gpu": "Some GPU", "packages": {"cupy-cuda13x": None, "torchcodec": "0.17", "torchvision": "0.29"}}
    reasons = dict(gpu_report.plan(env, list(RUNTIME_CHECKS)))
    assert reasons["emulated"] is None and reasons["nvjpeg"] is None and reasons["bench"] is None
    assert "CuPy" in reasons["cuda_kernels"] and "CuPy" in reasons["overlap"] and "CuPy" in reasons["static"]


def test_a_hung_check_is_stopped_with_its_children():
    script = ("import subprocess, sys, time\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              "print(child.pid, flush=True)\n"
              "time.sleep(60)\n")
    start = time.perf_counter()
    result = gpu_report.run_isolated([sys.executable, "-c", script], timeout=2)
    assert result["status"] == "timeout after 2 s" and time.perf_counter() - start < 20
    child = int(result["output_tail"].split()[0])
    deadline = time.time() + 10
    while time.time() < deadline and subprocess.run(["kill", "-0", str(child)], capture_output=True).returncode == 0:
        time.sleep(0.1)
    assert subprocess.run(["kill", "-0", str(child)], capture_output=True).returncode != 0   # the grandchild went too


def test_a_crashing_check_is_an_error_with_its_output():
    result = gpu_report.run_isolated([sys.executable, "-c", "raise SystemExit('driver said no')"], timeout=30)
    assert result["status"] == "error (exit code 1)" and "driver said no" in result["output_tail"]
