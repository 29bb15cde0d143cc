"""``python -m gpuaug.selftest --report gpu_report.json`` (``make gpu-check``): every CUDA check, one report.

Made for the first minutes on a GPU machine: it prints what it found (GPU, driver,
CUDA, package versions) and which checks it will skip and why, then runs each check in
a process of its own under a timeout, so a hung kernel, driver call or worker costs
that check and nothing else:

=======================  ===================================================================
``static``               NVRTC + ``ptxas -v``: registers, stack and spills per kernel
``emulated``             the kernel sources compiled for the CPU vs the torch reference
``cuda_kernels``         the CuPy kernels vs the reference, ragged batches, every dtype
``nvjpeg`` ...           the GPU runtime checks (``gpuaug.selftest.RUNTIME_CHECKS``)
``bench``                a short ``gpuaug.bench``: torchvision (CPU), DALI GPU, gpuaug GPU
=======================  ===================================================================

Each check ends ``ok``, ``FAILED``, ``timeout after N s``, ``error`` or ``skipped: <why>``
(without a GPU every CUDA check is ``skipped: no GPU`` and the report is still written).
The JSON holds the environment, every check's status, seconds, measurements and the
tail of its output; the PNG shows the checks and, when measured, the benchmark's
images/s. The exit code is 1 when a check failed, errored or timed out.

Example (CPU: the CUDA checks are skipped, the report is still complete):
    >>> from gpuaug.gpu_report import environment, plan
    >>> env = environment()
    >>> [name for name, why in plan(env, ["nvjpeg", "overlap"]) if why is None][:2]
    ['static', 'emulated']
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import torch

#: The benchmark's pipelines in a GPU check: the CPU baseline and the two GPU pipelines.
BENCH_PIPELINES = ("torchvision-pil", "dali-gpu", "gpuaug-cuda")
PACKAGES = ("torch", "torchvision", "cupy-cuda13x", "nvidia-dali-cuda130", "torchcodec", "kornia", "pillow")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _driver_version() -> str | None:
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=20)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip().splitlines()[0]
        except (OSError, subprocess.TimeoutExpired):
            pass
    return None


def environment() -> dict:
    """What this machine has: GPU, driver, CUDA and the versions of the packages the checks use."""
    gpu = torch.cuda.is_available()
    return {
        "python": sys.version.split()[0],
        "gpu": torch.cuda.get_device_name() if gpu else None,
        "gpu_count": torch.cuda.device_count() if gpu else 0,
        "driver": _driver_version() if gpu else None,
        "cuda_torch_built_with": torch.version.cuda,
        "packages": {name: _version(name) for name in PACKAGES},
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def plan(env: dict, runtime_checks) -> list[tuple[str, str | None]]:
    """Every check in order, with the reason it will be skipped (None: it runs).

    ``runtime_checks``: the names of the GPU runtime checks (``gpuaug.selftest`` owns them).
    """
    no_gpu = None if env["gpu"] else "no GPU"
    no_cupy = no_gpu or (None if env["packages"]["cupy-cuda13x"] else "CuPy is not installed (pip install 'gpuaug[cuda]')")
    no_codec = no_gpu or (None if env["packages"]["torchcodec"] or env["packages"]["torchvision"]
                          else "neither TorchCodec nor torchvision.io is installed")
    steps = [("static", None if env["packages"]["cupy-cuda13x"] else "NVRTC comes with CuPy, not installed"),
             ("emulated", None), ("cuda_kernels", no_cupy)]
    for name in runtime_checks:
        steps.append((name, no_codec if name == "nvjpeg" else no_cupy))
    steps.append(("bench", no_gpu))
    return steps


def run_isolated(command: list[str], timeout: float) -> dict:
    """Run ``command`` with a wall-clock limit; its status, seconds and the tail of its output.

    The process group is killed on timeout, so worker processes a check started go too.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
        status = "ran" if proc.returncode == 0 else f"error (exit code {proc.returncode})"
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
        output, _ = proc.communicate()
        status = f"timeout after {timeout:g} s"
    return {"status": status, "seconds": round(time.perf_counter() - start, 2), "output_tail": output[-4000:]}


def _check_command(name: str, out: Path, quick: bool) -> list[str]:
    if name == "bench":
        return [sys.executable, "-m", "gpuaug.bench", "--quick", "--device", "cuda", "--pipelines",
                ",".join(BENCH_PIPELINES), "--out", str(out), "--no-progress"]
    return [sys.executable, "-m", "gpuaug.selftest", "--step", name, "--step-out", str(out)] + (["--quick"] if quick
                                                                                               else [])


def run_check(name: str, timeout: float, quick: bool = False) -> dict:
    """One check in its own process; ``status`` is ok / FAILED / error / timeout."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        result = run_isolated(_check_command(name, out, quick), timeout)
        measured = json.loads(out.read_text()) if out.is_file() else None
    if result["status"] == "ran":
        if name == "bench":
            result["status"] = "ok" if measured and all(not r["status"].startswith("failed")
                                                        for r in measured["results"]) else "FAILED"
        else:
            result["status"] = "ok" if measured and measured["ok"] else "FAILED"
    if measured is not None:
        result["measured"] = measured if name == "bench" else measured.get("details", {})
    return result


def write_chart(report: dict, path: str) -> None:
    """Checks (seconds, coloured by status) and, when measured, the benchmark's images/s."""
    from matplotlib.figure import Figure

    checks = report["checks"]
    bench = checks.get("bench", {}).get("measured")
    rows = [r for r in (bench or {}).get("results", []) if r.get("images_per_s")]
    fig = Figure(figsize=(11 if rows else 7, 4), dpi=90)
    ax = fig.add_subplot(1, 2 if rows else 1, 1)
    names = list(checks)
    colour = {"ok": "tab:green", "FAILED": "tab:red"}
    ax.barh(names, [checks[n].get("seconds", 0.0) for n in names],
            color=[colour.get(checks[n]["status"], "tab:gray" if checks[n]["status"].startswith("skipped")
                              else "tab:orange") for n in names])
    for k, n in enumerate(names):
        ax.text(0, k, f" {checks[n]['status']}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds (green ok, red failed, orange error/timeout, gray skipped)")
    env = report["environment"]
    ax.set_title(f"gpuaug GPU check: {env['gpu'] or 'no GPU'}", fontsize=10)
    if rows:
        bx = fig.add_subplot(1, 2, 2)
        bx.barh([r["pipeline"] for r in rows], [r["images_per_s"] for r in rows], color="tab:blue")
        bx.invert_yaxis()
        bx.set_xlabel("images/s (bench --quick, train recipe)")
    fig.tight_layout()
    fig.savefig(path)


def run_report(path: str, runtime_checks, plot: str | None = None, quick: bool = False,
               timeout: float = 240.0) -> int:
    """Print the environment and the plan, run every check, write the JSON (and PNG); 0 if none failed."""
    env = environment()
    steps = plan(env, runtime_checks)
    print(f"GPU: {env['gpu'] or 'none'} (x{env['gpu_count']}), driver {env['driver'] or '-'}, "
          f"torch built for CUDA {env['cuda_torch_built_with'] or '-'}, Python {env['python']}")
    print("packages: " + ", ".join(f"{k} {v or 'missing'}" for k, v in env["packages"].items()))
    for name, why in steps:
        print(f"  {name:20s} {'will run' if why is None else 'skipped: ' + why}")
    report = {"environment": env, "checks": {}}
    start = time.perf_counter()
    for name, why in steps:
        if why is not None:
            report["checks"][name] = {"status": f"skipped: {why}", "seconds": 0.0}
            continue
        print(f"-- {name}", flush=True)
        result = run_check(name, timeout, quick)
        report["checks"][name] = result
        print(f"   {result['status']} ({result['seconds']:.1f} s)", flush=True)
        if result["status"] != "ok":
            print("   " + "\n   ".join(result["output_tail"].strip().splitlines()[-15:]))
    report["seconds"] = round(time.perf_counter() - start, 1)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=2))
    if plot:
        write_chart(report, plot)
    bad = [n for n, r in report["checks"].items() if not (r["status"] == "ok" or r["status"].startswith("skipped"))]
    print(f"report: {path}" + (f", chart: {plot}" if plot else "") + f" ({report['seconds']} s); "
          + (f"NOT OK: {', '.join(bad)}" if bad else "every check that ran is ok"))
    return 1 if bad else 0
