# PY: the interpreter of the project's virtualenv (override: make test PY=/path/to/python).
PY ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)

.PHONY: test lint fmt typecheck pytest demo bench

test: lint typecheck pytest

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck:
	$(PY) -m mypy worker

pytest:
	$(PY) -m pytest

fmt:
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

demo:
	$(PY) -m worker demo

bench:
	$(PY) -m bench
