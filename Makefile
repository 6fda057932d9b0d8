# make dev   set up (idempotent) and run the local dev room
# make test  set up (idempotent) and run the test suite
# make serve set up (idempotent) and run the REST API server (run.py serve)
# make setup only the setup (scripts/setup.sh)
#
# make dev stays the dev room alone: the API is a server of its own (a key made
# and printed at first start, a database, webhooks) that a first call does not
# need, and starting both as two processes would load the engines twice (two
# llama-servers on the same cores). make serve starts the API; its conversation
# pages are the same call page, bound to one conversation.
.PHONY: setup dev test serve

PYTHON := .venv/bin/python

setup:
	bash scripts/setup.sh

dev: setup
	$(PYTHON) run.py

serve: setup
	$(PYTHON) run.py serve

test: setup
	$(PYTHON) -m pytest $(PYTEST_ARGS)
