# Every target installs what it needs first (idempotent: a second run takes seconds).
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup test test-fast lint docs demo clean

setup:
	@bash scripts/setup.sh

# Everything, in three parts (a failure stops the later ones), each ending with its 30 slowest
# tests: the unit tests, then the end-to-end runs and the soaks (-m "e2e or soak"), each on
# two workers (pytest-xdist, a test file per worker at a time); then, alone, the tests that
# measure the machine (-m serial: speed, delays, threads chosen by timing).
XDIST := -n 2 --dist loadfile
test: setup
	$(PY) -m pytest -q $(XDIST) -m "not e2e and not soak and not serial"
	$(PY) -m pytest -q $(XDIST) -m "(e2e or soak) and not serial"
	$(PY) -m pytest -q -m serial

# The inner loop: the unit tests on two workers, without the slowest (-m slow, over ~4 s each)
# and without the tests that measure the machine.
test-fast: setup
	$(PY) -m pytest -q $(XDIST) -m "not e2e and not soak and not serial and not slow"

# docs/elements.md's property tables, from the elements' declarations (a test checks them)
docs: setup
	$(PY) -m torchstream.elements.reference

lint: setup
	$(VENV)/bin/ruff check src tests scripts bench

demo: setup models
	@bash scripts/demo.sh

# The service on two looped videos (bikes.mp4 through CenterNet with tracking, cockatoo.mp4
# through mobilenet_v2): http://127.0.0.1:8080/ (docs/serve.md); ARGS="--port 9000" etc.
.PHONY: serve
serve: setup models
	$(PY) -m scripts.serve_demo $(ARGS)

clean:
	rm -rf out .pytest_cache

# The pretrained CenterNet COCO detector and MoveNet Lightning pose model: `npm pack` of
# @vladmandic/human (hash-checked), then converted to models/{centernet,movenet}/*.ts and .pt2
# (build outputs, git-ignored; see docs/centernet.md). Needs npm and the npm registry; a second run only checks hashes and dates.
.PHONY: models
models: setup
	$(PY) -m scripts.convert_models

# The benchmark suite (docs/benchmarks.md): bare model vs plain OpenCV loop vs the
# torchstream pipelines, interleaved; pass options with BENCH_ARGS="--models resnet50 --json x".
.PHONY: bench
bench: setup
	$(PY) -m bench $(BENCH_ARGS)
