# The commands a person types. `make demo` and `make test` install what is missing first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install redis-server demo test chaos stack clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# redis-server from Debian's packages, when the machine has none.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

demo: install redis-server
	$(PY) -m worker.demo

test: install redis-server
	$(PY) -m pytest

# The chaos test at full length (5 minutes of load, a pod SIGKILLed every 7 s).
chaos: install redis-server
	$(PY) -m tests.chaos --duration 300 --kill-every 7 --json chaos-results.json

# A long-running local stack (emulator + worker) on the Procfile; needs Redis on REDIS_URL.
stack: install
	$(VENV)/bin/honcho -e local.env start

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

# Benchmarks against the emulator on a private redis-server (~15 minutes): prints the table,
# writes bench-results/ and BENCHMARKS.md. `make bench BENCH_FLAGS=--quick` for a smoke run.
BENCH_FLAGS ?=
.PHONY: bench
bench: install redis-server
	$(PY) -m bench $(BENCH_FLAGS)
