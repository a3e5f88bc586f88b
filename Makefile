# Every target installs what it needs first (idempotent: a second run takes seconds).
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup test lint demo clean

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests plugins scripts

demo: setup
	@bash scripts/demo.sh

clean:
	rm -rf out .pytest_cache
