# Two entry points for a fresh machine with Python 3.11: `make demo` (the main job) and `make test`.
# Both create or refresh .venv/ from setup.py, every dependency pinned by constraints.txt.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: venv demo test clean
venv:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade "pip==26.3" "setuptools==84.2.1" "wheel==0.48.0"
	@$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[full,test]"

demo: venv
	$(BIN)/edgetpu-models demo

test: venv
	$(BIN)/ruff check .
	$(BIN)/vermin -t=3.9- --no-tips --violations $$(grep -v "^#" tools/runtime_modules.txt)
	$(BIN)/python tools/lint_imports.py
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
