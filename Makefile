# Agency OS spot migration — the entry points. See README.md.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# Molecule scenarios run by `make test`, in this order.
SCENARIOS ?= node_base prefect_worker preemption_watcher aws_spot_capacity gcp_spot_capacity local_spot_capacity

.PHONY: setup lint test pytest molecule provision bench drill lock clean

setup:            ## install everything (apt packages, dockerd, .venv, collections, node image); idempotent
	@scripts/setup.sh

lint: setup       ## yamllint, ansible-lint (production profile), ruff, the import layers (lint-imports)
	yamllint --strict .
	ansible-lint
	ruff check .
	ruff format --check .
	lint-imports --no-cache

pytest: setup
	pytest

molecule: setup
	@set -e; for s in $(SCENARIOS); do echo "==> molecule test -s $$s"; molecule test -s $$s; done

test: setup       ## lint + pytest + every molecule scenario (what CI runs)
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory pytest
	$(MAKE) --no-print-directory molecule

provision: setup  ## bring up the embedded local default (ansible-playbook provision_spot.yml)
	ansible-playbook provision_spot.yml

drill: setup      ## failover drill on the embedded default (after make provision); DRILL_ARGS='-e drill_seed=42'
	@# The drill's log (its Prefect UI link first, then faults, recoveries and progress) is shown as it is written.
	@mkdir -p reports/drill; : > reports/drill/drill.log; tail -n +1 -F reports/drill/drill.log 2>/dev/null & tailer=$$!; \
	ansible-playbook playbooks/failover_drill.yml $(DRILL_ARGS); rc=$$?; sleep 1; kill $$tailer; exit $$rc

lock:             ## regenerate constraints.txt from the current .venv
	@{ sed -n '1,2p' constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v '^agency-os-spot'; } > constraints.txt.new && mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build

bench: setup      ## ingest-rate and preemption benchmark of abn_bulk_ingestion (prints JSON)
	python benchmarks/abn_ingest.py
