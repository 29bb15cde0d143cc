"""CPU vs GPU preprocessing benchmark: see ``gpuaug/bench.py`` (``python -m gpuaug.bench --help``)."""
import sys

from gpuaug.bench import main

if __name__ == "__main__":
    sys.exit(main())
