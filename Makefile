# jwo: `make demo` runs the simulated store end to end, `make test` runs the tests.
# Both set up what they need first (a virtual environment with the ROS 2 Kilted
# wheels, the jwo interfaces built into it, jwo installed) and skip what is done.

VENV    := .venv
STAMPS  := $(VENV)/.stamps
PY      := $(VENV)/bin/python
PYTHON  ?= $(shell for p in python3.12 python3.11 python3.10 python3; do \
             command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(not (3,10) <= sys.version_info[:2] <= (3,12))' 2>/dev/null && { echo $$p; break; }; done)
MSG_SOURCES := $(wildcard msg/*.msg) CMakeLists.txt package.xml
STORE   ?= config/stores/demo.yaml
SCENARIO ?= config/scenarios/demo.yaml
# The demo tracks shoppers on the rendered camera frames; DEMO_ARGS= runs the simulator's
# stand-in tracker instead.
DEMO_ARGS ?= --vision

.PHONY: setup demo test suite holdout bench bench-vision train clean
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
	@echo "==> building the jwo interfaces"
	@tools/build_msgs.sh $(VENV)
	@touch $@

$(STAMPS)/jwo: $(STAMPS)/msgs setup.py setup.cfg
	@echo "==> installing jwo (jwo_nodes, jwo_cloud)"
	@$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

demo: setup
	@$(VENV)/bin/jwo demo --store $(STORE) --scenario $(SCENARIO) $(DEMO_ARGS)

# Two test workers (pytest-xdist): most tests wait on processes and DDS, and the vision
# suite's groups spread over both. Two tests handed out at a time (--maxschedchunk):
# by default each worker gets a quarter of its share up front, in order, so the first
# took every slow test (test/conftest.py starts them first) and ran them one after the
# other (737 s on a fresh clone; 530 s this way).
test: setup
	@tools/ensure_chromium.sh
	@$(PY) -m pytest -q -n 2 --maxschedchunk 2 --durations=15 test

# The scenario suite with vision through the real nodes at 2x, the yardstick for the
# figures in the README (about 19 minutes; `make test` runs it as pure code).
suite: setup
	@$(VENV)/bin/jwo eval --vision --store test/stores/suite.yaml --suite test/scenarios --time-scale 2

# Fusion with vision (as pure code) on hard scenarios the suite has never seen, generated
# from seeds 201-222: what the suite's five hard scenarios can hide (about 8 minutes).
HOLDOUT := runs/holdout
holdout: setup
	@mkdir -p $(HOLDOUT)
	@for seed in $$(seq 201 222); do test -f $(HOLDOUT)/hard-c$$seed.yaml || $(VENV)/bin/jwo scenario --preset hard \
	    --seed $$seed --store test/stores/suite.yaml -o $(HOLDOUT)/hard-c$$seed.yaml --quiet || exit 1; done
	@$(VENV)/bin/jwo fusion-check --vision --jobs 2 --store test/stores/suite.yaml $(HOLDOUT)/hard-c*.yaml

# Replay throughput and sensor-to-cart latency on a 40-shelf store (about 10 minutes);
# a quicker look: make bench BENCH_ARGS='--shelves 8 --visits 6 --minutes 2'.
bench: setup
	@$(VENV)/bin/jwo bench $(BENCH_ARGS)

# Detector frames/s (batched across cameras, one at a time, OpenCV DNN) and how many
# cameras at 10 fps the vision tracker keeps up with (about 2 minutes).
bench-vision: setup
	@$(VENV)/bin/jwo bench-vision $(BENCH_ARGS)

# Retrains the shipped detector (models/detector.onnx) and held-item reader
# (models/held_item.onnx) from rendered frames on the CPU, reproducibly from their seeds
# (about 11 and 13 minutes on 2 cores); PyTorch is a training extra.
$(STAMPS)/train: $(STAMPS)/jwo requirements-train.txt
	@echo "==> PyTorch for training (requirements-train.txt)"
	@$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-train.txt
	@touch $@

train: $(STAMPS)/train
	@$(PY) -m jwo_nodes.train.train_detector --out models/detector.onnx $(TRAIN_ARGS)
	@$(PY) -m jwo_nodes.train.train_held_item --out models/held_item.onnx $(TRAIN_ARGS)

clean:
	rm -rf $(VENV) build runs
