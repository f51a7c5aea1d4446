# postroom: the two commands are `make run` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Every first-party plugin distribution (plugins/<name>/ with a setup.cfg).
PLUGINS := $(sort $(dir $(wildcard plugins/*/setup.cfg)))
QUICKSTART := var/quickstart

.PHONY: run test test-unit lint docs bench bench-memory fuzz clean venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel

# Reinstall when any distribution's metadata changes.
$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml $(wildcard plugins/*/setup.cfg)
	$(BIN)/pip install --quiet -e '.[test]' $(foreach p,$(PLUGINS),-e $(p))
	touch $@

venv: $(VENV)/.installed

## make run: install, copy the quickstart site to var/, run the gateway once over it
run: venv
	rm -rf $(QUICKSTART) && mkdir -p var && cp -r examples/quickstart $(QUICKSTART)
	$(BIN)/postroom run -c $(QUICKSTART)/postroom.yaml --once
	@echo
	@echo "Interactions in $(QUICKSTART)/postroom.db:"
	@$(BIN)/postroom interactions list -c $(QUICKSTART)/postroom.yaml

## make test: start the servers the tests need (needs root), then run every test
test: venv
	@if [ "$$(id -u)" != 0 ]; then \
	  echo "make test needs root: it installs and starts test servers from Debian packages." >&2; \
	  echo "Run 'make test-unit' for the tests that need no server." >&2; exit 2; fi
	contrib/scripts/install-test-packages
	POSTROOM_TEST_PG="$$(contrib/scripts/pg-test-server)" && export POSTROOM_TEST_PG && \
	  mail_env="$$(contrib/scripts/mail-test-servers start)" && eval "$$mail_env" && \
	  proxy_env="$$(contrib/scripts/proxy-test-servers start)" && eval "$$proxy_env" && \
	  amqp_env="$$(contrib/scripts/amqp-test-server start)" && eval "$$amqp_env" && \
	  ldap_env="$$(contrib/scripts/ldap-test-server start)" && eval "$$ldap_env" && \
	  $(BIN)/python -m pytest -q
	$(MAKE) lint

## make test-unit: the tests that need no server
test-unit: venv
	$(BIN)/python -m pytest -q -m "not postgresql and not servers"

# Every distribution's package: the kernel, each plugin, the examples.
TYPED := kernel/postroom $(foreach p,$(PLUGINS),$(wildcard $(p)postroom_*/__init__.py)) \
	examples/custom-classifier/postroom_urgent examples/embed/embed_gateway.py

## make lint: ruff, the import contracts (pyproject.toml: public API only, kernel layers), mypy
lint: venv
	$(BIN)/ruff check kernel plugins examples tests
	PYTHONPATH=examples/custom-classifier $(BIN)/lint-imports
	$(BIN)/mypy $(patsubst %/__init__.py,%,$(TYPED))

## make bench: throughput and latency against raw baselines, on the real servers (root),
## then the memory of large messages, then listing interactions (bench/listing.py)
bench: venv
	contrib/scripts/install-test-packages
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/listing.py

## make bench-memory: peak memory of the gateway's process tree for 50 MB messages (no servers)
bench-memory: venv
	$(BIN)/python bench/memory.py

## make fuzz: open-ended fuzzing of the inbound pipeline with every plugin (not in CI);
## each failing input it finds is written to tests/hostile/found/, which `make test` replays
FUZZ_EXAMPLES ?= 20000
fuzz: venv
	POSTROOM_FUZZ=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q -p no:cacheprovider \
	  tests/hostile/test_pipeline_fuzz.py -k generated

## make docs: regenerate docs/configuration.md from the option declarations
docs: venv
	$(BIN)/postroom config-reference -o docs/configuration.md

clean:
	rm -rf var build .pytest_cache .mypy_cache .ruff_cache
