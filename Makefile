# The few verbs people use. Each works on a fresh machine with Python 3.11+, and right after the
# README's install or test command (whose venv lacks the linters: lint and typecheck add '.[dev]').
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint typecheck bench

$(VENV)/bin/audience-sync: pyproject.toml
	python3 -m venv $(VENV) && $(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

# Order-only: a venv the README's commands made keeps its packages and gains the dev tools.
$(VENV)/bin/ruff $(VENV)/bin/mypy: | $(VENV)/bin/audience-sync
	$(VENV)/bin/pip install -q -e '.[dev]'

demo: $(VENV)/bin/audience-sync
	$(VENV)/bin/audience-sync demo

test: $(VENV)/bin/audience-sync
	$(VENV)/bin/pytest

lint: $(VENV)/bin/ruff
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# mypy needs the import name on disk: .mypyroot/audiencesync is the package as it installs, the
# files of sync/api/ beside links to the three subpackage folders. sync/api/ itself is skipped
# where it shows up again under sync/.
typecheck: $(VENV)/bin/mypy
	rm -rf .mypyroot/audiencesync && mkdir -p .mypyroot/audiencesync
	for f in sync/api/*.py; do ln -s ../../$$f .mypyroot/audiencesync/; done
	for d in connectors sync state; do ln -s ../../$$d .mypyroot/audiencesync/$$d; done
	cd .mypyroot && MYPYPATH=. ../$(VENV)/bin/mypy --config-file ../pyproject.toml \
		--exclude '^audiencesync/sync/api/' -p audiencesync

bench: $(VENV)/bin/audience-sync
	$(PY) benchmarks/plan.py --members 100000 --json
	$(PY) benchmarks/push.py --changes 100000 --json
