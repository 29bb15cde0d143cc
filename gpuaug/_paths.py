"""Where gpuaug finds its CUDA sources and keeps its cache.

The CUDA sources live in the repository's top-level ``kernels/`` directory; the wheel
ships them as package data at ``gpuaug/kernels/`` (``pyproject.toml`` maps the package
``gpuaug.kernels`` onto ``kernels/``). :func:`kernels_dir` returns the checkout's copy
when gpuaug runs from a source tree (plain checkout or ``pip install -e .``) and the
packaged copy otherwise, so edits to ``kernels/*.cu`` take effect without reinstalling.

Example:
    >>> from gpuaug._paths import cache_dir, kernels_dir
    >>> (kernels_dir() / "README.md").is_file()
    True
    >>> cache_dir()                    # doctest: +SKIP
    PosixPath('/home/me/.cache/gpuaug')
"""
from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def kernels_dir() -> Path:
    """The directory holding the CUDA sources (``*.cu``, ``*.cuh``) of the fused ops.

    Order: the checkout's ``kernels/`` (next to ``pyproject.toml`` above this package),
    then the packaged ``gpuaug/kernels/``, then whatever ``importlib.resources`` resolves
    for ``gpuaug.kernels`` (editable installs whose package was moved).

    Raises:
        FileNotFoundError: when no copy of the kernels can be found.
    """
    checkout = _PACKAGE_DIR.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "kernels").is_dir():
        return checkout / "kernels"
    packaged = _PACKAGE_DIR / "kernels"
    if packaged.is_dir():
        return packaged
    try:  # editable installs map gpuaug.kernels through an import finder
        from importlib.resources import files

        resolved = Path(str(files("gpuaug.kernels")))
        if resolved.is_dir():
            return resolved
    except (ImportError, TypeError, ValueError):
        pass
    raise FileNotFoundError(
        f"gpuaug kernels not found: looked in {checkout / 'kernels'} and {packaged}; "
        "reinstall gpuaug (pip install .) or run from a checkout")


def cache_dir() -> Path:
    """gpuaug's cache directory: ``$GPUAUG_CACHE`` or ``~/.cache/gpuaug`` (not created here)."""
    env = os.environ.get("GPUAUG_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "gpuaug"


__all__ = ["kernels_dir", "cache_dir"]
