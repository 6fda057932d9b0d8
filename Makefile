# make dev   set up (idempotent) and run the local dev room
# make test  set up (idempotent) and run the test suite
# make setup only the setup (scripts/setup.sh)
.PHONY: setup dev test

PYTHON := .venv/bin/python

setup:
	bash scripts/setup.sh

dev: setup
	$(PYTHON) run.py

test: setup
	$(PYTHON) -m pytest $(PYTEST_ARGS)
