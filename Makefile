# jwo: `make demo` runs the simulated store end to end, `make test` runs the tests.
# Both set up what they need first (a virtual environment with the ROS 2 Kilted
# wheels, the jwo_msgs interfaces built into it, jwo installed) and skip what is done.

VENV    := .venv
STAMPS  := $(VENV)/.stamps
PY      := $(VENV)/bin/python
PYTHON  ?= $(shell for p in python3.12 python3.11 python3.10 python3; do \
             command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(not (3,10) <= sys.version_info[:2] <= (3,12))' 2>/dev/null && { echo $$p; break; }; done)
MSG_SOURCES := $(wildcard msg/*.msg) msg/CMakeLists.txt msg/package.xml
STORE   ?= config/stores/demo.yaml
SCENARIO ?= config/scenarios/demo.yaml

.PHONY: setup demo test clean
.DEFAULT_GOAL := demo

setup: $(STAMPS)/jwo

$(STAMPS)/venv: requirements-ros.txt requirements.txt
	@test -n "$(PYTHON)" || { echo "error: jwo needs Python 3.10, 3.11 or 3.12 on PATH (set PYTHON=...)"; exit 1; }
	@echo "==> virtual environment $(VENV) ($(PYTHON)) with the ROS 2 Kilted wheels"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# A current pip: old ones install editable packages through the deprecated setup.py develop.
	@$(PY) -m pip install --quiet --disable-pip-version-check --upgrade 'pip>=25'
	@$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-ros.txt -r requirements.txt
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/msgs: $(STAMPS)/venv $(MSG_SOURCES) tools/build_msgs.sh
	@echo "==> building the jwo_msgs interfaces"
	@tools/build_msgs.sh $(VENV)
	@touch $@

$(STAMPS)/jwo: $(STAMPS)/msgs setup.py setup.cfg package.xml
	@echo "==> installing jwo_nodes"
	@$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

demo: setup
	@$(VENV)/bin/jwo demo --store $(STORE) --scenario $(SCENARIO)

test: setup
	@tools/ensure_chromium.sh
	@$(PY) -m pytest -q test

clean:
	rm -rf $(VENV) build runs
