# Two commands do everything on a fresh machine:
#   make figures   install (once) and regenerate figures/ with the quick profile
#   make test      install (once) and run the default test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export TF_CPP_MIN_LOG_LEVEL := 3

# The environment is installed from requirements.lock without dependency resolution (exact versions,
# no TensorFlow: neural-tangents needs it only for a subpackage ntkngd never imports), then ntkngd
# itself. `pip install .` from pyproject.toml still gives neural-tangents with all its requirements.
$(BIN)/ntkngd: pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

install: $(BIN)/ntkngd

# Two worker processes (pytest-xdist), each test file on one worker so module fixtures are shared.
test: install
	$(BIN)/pytest -q -p no:cacheprovider -n 2 --dist loadfile

test-slow: install
	$(BIN)/pytest -q -m slow -p no:cacheprovider

figures: install
	$(BIN)/ntkngd figures --profile quick

bench: install
	$(BIN)/python experiments/bench_startup.py
	$(BIN)/python experiments/bench_analytic.py
	$(BIN)/python experiments/bench_finite.py

.PHONY: install test test-slow figures bench
