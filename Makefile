# PY: the interpreter of the project's virtualenv (override: make test PY=/path/to/python).
PY ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)

.PHONY: test lint imports fmt typecheck pytest demo bench

test: lint imports typecheck pytest

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

imports:  # lint-imports: the layers of [tool.importlinter] in pyproject.toml
	$(PY) -c 'from importlinter.cli import lint_imports_command; lint_imports_command()' --no-cache --no-logo

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
