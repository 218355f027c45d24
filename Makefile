# The README's two commands: `make demo` (main job) and `make test` (lint + tests).
# Both install the project into the virtual environment .venv first (pip install -e, the
# dependencies pinned in pyproject.toml): the CPU build of TensorFlow, or its CUDA build
# where nvidia-smi finds a GPU.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO_ARGS ?=

.PHONY: venv test demo clean-venv

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  $(PY) -m pip install -q -e ".[test,cuda]" && \
	  $(PY) -m pip install -q --force-reinstall --no-deps \
	    "tensorflow==$$($(PY) -c 'import importlib.metadata as m; print(m.version("tensorflow-cpu"))')"; \
	else \
	  $(PY) -m pip install -q -e ".[test]"; \
	fi
	touch $@

test: venv
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n auto --dist loadfile --no-loadscope-reorder tests

demo: venv
	$(PY) -m tools.demo $(DEMO_ARGS)

clean-venv:
	rm -rf $(VENV)
