# Two commands do everything on a fresh machine:
#   make figures   install (once) and regenerate figures/ with the quick profile
#   make test      install (once) and run the default test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export TF_CPP_MIN_LOG_LEVEL := 3

$(BIN)/ntkngd: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

install: $(BIN)/ntkngd

test: install
	$(BIN)/pytest -q -p no:cacheprovider

test-slow: install
	$(BIN)/pytest -q -m slow -p no:cacheprovider

figures: install
	$(BIN)/ntkngd figures --profile quick

bench: install
	$(BIN)/python experiments/bench_startup.py
	$(BIN)/python experiments/bench_analytic.py
	$(BIN)/python experiments/bench_finite.py

.PHONY: install test test-slow figures bench
