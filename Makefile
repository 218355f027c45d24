# The README's two commands: `make demo` (main job) and `make test` (lint + tests).
# Both create/update the virtual environment in .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TF_VERSION := 2.21.0
DEMO_ARGS ?=

.PHONY: venv test demo clean-venv

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  $(PY) -m pip install -q "tensorflow[and-cuda]==$(TF_VERSION)"; \
	else \
	  $(PY) -m pip install -q "tensorflow-cpu==$(TF_VERSION)"; \
	fi
	$(PY) -m pip install -q -r requirements.txt
	touch $@

test: venv
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n auto --dist loadfile --no-loadscope-reorder tests

demo: venv
	$(PY) -m tools.demo $(DEMO_ARGS)

clean-venv:
	rm -rf $(VENV)
