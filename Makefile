# Two commands do all the set-up on a fresh machine with Python 3.11 and git:
#   make repro   creates .venv if missing, installs the project, runs `dvc repro`
#   make test    the same set-up, then the test suite
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export DVC_NO_ANALYTICS := 1

.PHONY: repro test test-extended rehearsal install figures clean-venv

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# torch/torchvision pinned to the wheels this machine's pip finds locally; the code also runs on torch 2.11.
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# dvc.yaml's commands run .venv/bin/python themselves, whatever PATH holds.
repro: $(STAMP)
	$(VENV)/bin/dvc repro

# The offline-plots browser check needs Debian's chromium; install it when we can (root with apt-get),
# otherwise that one test is skipped with a reason.
test: $(STAMP)
	@if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing chromium for the browser check (apt-get)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
			|| echo "chromium could not be installed: the browser check will be skipped"; \
	fi
	$(PY) -m pytest tests -m "not extended" $(XDIST) --durations=15

# pytest-xdist: one worker per core; a test file stays on one worker, so its module fixtures (the smoke pipeline,
# the rehearsal) are built once.
XDIST := -n auto --dist loadfile

# What `make test` leaves out to stay within its 15 minutes, run by CI after it: the tests marked `extended`
# (the compiled step, the DAFormer smoke pipeline, more kill -9 resumes) and the other presets' rehearsal.
test-extended: rehearsal
	$(PY) -m pytest tests -m extended $(XDIST) --durations=15

# The presets' rehearsal on the miniature real-size datasets (README "Miniature real datasets") for the presets
# that `make test` leaves out (CI runs it after `make test`); REHEARSAL=all runs all four.
REHEARSAL ?= gta2cityscapes_daformer,synthia2cityscapes,synthia2cityscapes_daformer
rehearsal: $(STAMP)
	CORDA_REHEARSAL=$(REHEARSAL) $(PY) -m pytest tests/test_rehearsal.py

# The README's figures (docs/predict_example.png, docs/plots_page.png) from the run in the workspace (after
# `make repro` or `dvc pull`), and docs/figures.json, which tests/test_figures.py compares with dvc.lock and the code.
figures: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) docs/figures.py

clean-venv:
	rm -rf $(VENV)
