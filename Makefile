# The few verbs people use. Each works on a fresh machine with Python 3.11+.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint typecheck bench

$(VENV)/bin/audience-sync: pyproject.toml
	python3 -m venv $(VENV) && $(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/bin/audience-sync
	$(VENV)/bin/audience-sync demo

test: $(VENV)/bin/audience-sync
	$(VENV)/bin/pytest

lint: $(VENV)/bin/audience-sync
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# mypy needs the import name on disk: a link named audiencesync to this checkout.
typecheck: $(VENV)/bin/audience-sync
	mkdir -p .mypyroot && ln -sfn .. .mypyroot/audiencesync
	cd .mypyroot && MYPYPATH=. ../$(VENV)/bin/mypy --config-file ../pyproject.toml \
		-p audiencesync.connectors -p audiencesync.sync -p audiencesync.state

bench: $(VENV)/bin/audience-sync
	$(PY) benchmarks/plan.py --members 100000 --json
	$(PY) benchmarks/push.py --changes 100000 --json
