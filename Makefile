# Two commands a user needs: `make demo` and `make test`. Both install into .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?= -m "not soak"

$(VENV)/.installed: pyproject.toml
	@echo "Installing clustersim and its dev tools into $(VENV) (first run only)..."
	@python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@PYTHONWARNINGS=ignore $(PY) -m pip install -q -e '.[dev]'
	@touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	@$(VENV)/bin/clustersim replay --num-workers 4 --report-json out/demo-report.json

test: $(VENV)/.installed
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q $(PYTEST_ARGS)

soak: $(VENV)/.installed
	$(PY) -m pytest -q -m soak

chaos: $(VENV)/.installed
	$(PY) -m tests.chaos.soak --schedules $(or $(SCHEDULES),1000)

typecheck: $(VENV)/.installed
	$(PY) -m mypy

bench: $(VENV)/.installed
	$(PY) benchmarks/replay_speed.py

.PHONY: install demo test soak chaos typecheck bench
