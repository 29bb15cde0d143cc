"""Every runnable example in gpuaug's docstrings runs and prints what it says (on CPU)."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import gpuaug

MODULES = sorted(m.name for m in pkgutil.walk_packages(gpuaug.__path__, "gpuaug.")
                 if not m.name.endswith("__main__") and m.name not in ("gpuaug.device",))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
