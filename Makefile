# The commands a person types. `make demo` and `make test` install what is missing first
# (`make demo` only what the demo needs).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install redis-server prometheus deploy-tools demo lint test coverage chaos quirks stack clean

# `make install`: everything (the package and its test extras: pytest, the linters, the
# manifest checkers). `make demo` and `make stack` install the package alone, into the same
# venv; the first target that needs the extras adds them.
install: $(VENV)/.installed-test

$(VENV)/.installed-base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-base
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# redis-server from Debian's packages, when the machine has none.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

# Prometheus and promtool from Debian's packages (the observability tests run both); a
# policy-rc.d keeps the package from starting a system-wide Prometheus service.
prometheus:
	@command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || { \
	  echo "installing prometheus"; \
	  policy=/usr/sbin/policy-rc.d; added=; \
	  if [ ! -e $$policy ]; then printf '#!/bin/sh\nexit 101\n' > $$policy && chmod +x $$policy && added=1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  status=$$?; [ -n "$$added" ] && rm -f $$policy; exit $$status; }

demo: $(VENV)/.installed-base redis-server
	$(PY) -m worker.demo

# The CRD schemas for the manifest checks (Node packages, locked in deploy/validate).
deploy-tools: deploy/validate/node_modules/.package-lock.json

deploy/validate/node_modules/.package-lock.json: deploy/validate/package-lock.json
	npm ci --prefix deploy/validate --no-audit --no-fund --silent

# Lint and types, the first step of `make test`: ruff on everything, mypy --strict on the
# packages (worker/, producers/, emulator/: `files` in pyproject.toml's [tool.mypy]). Both
# run, so that one run shows every finding; either failing fails the target.
lint: install
	status=0; $(PY) -m ruff check . || status=1; $(PY) -m mypy || status=1; exit $$status

test: lint redis-server prometheus deploy-tools
	$(PY) -m pytest
	$(MAKE) --no-print-directory coverage

# The conversation core's line coverage by its unit tests (tests/unit): at least 95 %.
coverage: install redis-server
	$(PY) -m pytest tests/unit -q --cov=worker/conversation --cov-report=term-missing --cov-fail-under=95

# The chaos test at full length (5 minutes of load, a pod SIGKILLed every 7 s).
STREAMING ?= auto
chaos: install redis-server
	$(PY) -m tests.chaos --duration 300 --kill-every 7 --backend assistants --streaming $(STREAMING) --json chaos-assistants.json
	$(PY) -m tests.chaos --duration 300 --kill-every 7 --backend responses --streaming $(STREAMING) --json chaos-responses.json

# One server quirk at full size (tests/quirks.py): `make quirks CASE=outage BACKEND=responses`.
CASE ?= plain
BACKEND ?= assistants
quirks: install redis-server
	$(PY) -m tests.quirks --case $(CASE) --backend $(BACKEND) --json quirks-$(CASE)-$(BACKEND).json

# A long-running local stack on the Procfile (Redis on 6390, the emulator, a worker).
stack: $(VENV)/.installed-base redis-server
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/honcho -e local.env start

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info

# Benchmarks against the emulator on a private redis-server (~20 minutes): prints the table,
# writes bench-results/ and BENCHMARKS.md. `make bench BENCH_FLAGS=--quick` for a smoke run.
# The `bench` extra adds dbos, for the DBOS baseline (it needs a PostgreSQL: DBOS_SYSTEM_DATABASE_URL,
# by default the local one; without one the bench says so in one line and runs the rest).
BENCH_FLAGS ?=
.PHONY: bench
$(VENV)/.installed-bench: $(VENV)/.installed-test
	$(PY) -m pip install --quiet -e '.[bench]'
	touch $@

bench: install $(VENV)/.installed-bench redis-server
	$(PY) -m bench $(BENCH_FLAGS)

# Two commits compared: --repeat (3) interleaved runs of each commit's own bench (old, new, old,
# new, ...) in a worktree and a venv of that commit (venvs kept in .bench-cache/), medians
# normalised by the host-speed reference; prints the table, writes bench-results/compare/.
# `make bench-compare OLD=<commit> NEW=<commit> COMPARE_FLAGS="--only cost --quick --repeat 1"`.
OLD ?= HEAD~1
NEW ?= HEAD
COMPARE_FLAGS ?=
.PHONY: bench-compare
bench-compare: install redis-server
	$(PY) -m bench compare $(OLD) $(NEW) $(COMPARE_FLAGS)
