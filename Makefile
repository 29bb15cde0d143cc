# gpuaug developer entry points. `make demo` and `make test` create .venv/ when missing.
#
#   make venv   create/refresh .venv (re-installs when pyproject.toml changes)
#   make demo   run the main job on the embedded sample dataset (ARGS="--epochs 3" to pass options)
#   make test   run the whole test suite (ARGS="-k sample" to pass pytest options)
#   make gpu-check  every CUDA check in its own process under a timeout -> gpu_report.json + .png

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# torch first and pinned: pip takes these from this machine's local wheels; letting the
# dev extras pick a torch would download a different multi-GB build.
TORCH  := torch==2.14.1 torchvision==0.29.1

.PHONY: venv demo test gpu-check clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || { echo "creating $(VENV) with $$($(PYTHON) --version)"; $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --upgrade pip || echo "warning: could not upgrade pip; going on with $$($(PY) -m pip --version)"
	$(PY) -m pip install $(TORCH)
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

demo: venv
	$(PY) -m gpuaug.demo $(ARGS)

test: venv
	$(PY) -m pytest -q -p no:cacheprovider $(ARGS)

gpu-check: venv
	$(PY) -m gpuaug.selftest --report gpu_report.json --plot gpu_report.png $(ARGS)

clean:
	rm -rf build dist *.egg-info demo_output
