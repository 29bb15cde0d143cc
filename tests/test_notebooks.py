"""The notebooks run on CPU on the embedded dataset, so they never rot."""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_all_three_notebooks_are_there():
    assert [p.name for p in NOTEBOOKS] == ["01_quickstart.ipynb", "02_custom_pipelines.ipynb", "03_cpu_vs_gpu.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path):
    sys.path.insert(0, str(path.parent))
    try:
        from build import execute
    finally:
        sys.path.pop(0)
    nb = execute(nbformat.read(path, as_version=4), timeout=150)     # raises on any cell error
    assert all(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")
    images = sum("image/png" in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
                 for out in cell.outputs)
    assert images >= 2, "the notebook should show its plots"
