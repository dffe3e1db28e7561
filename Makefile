# The two commands a new user runs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYVER := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
CONSTRAINTS := constraints-$(PYVER).txt

.PHONY: install test lint typecheck pytest demo sandbox constraints clean e2e

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	@test -f $(CONSTRAINTS) || { echo "No $(CONSTRAINTS): this Python ($(PYVER)) has no pinned constraints; use Python 3.11 or run 'make constraints'."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --constraint $(CONSTRAINTS) --editable ".[test]"
	@touch $@

install: $(VENV)/.installed

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

pytest: install
	$(PY) -m pytest

test: lint typecheck pytest

demo: install
	$(PY) dev/demo.py

# The provider in a real deployment (needs root: it installs Debian's PostgreSQL, Redis and
# Chromium when missing, and runs PostgreSQL as the postgres user). See dev/e2e.py.
E2E_APT := postgresql redis-server chromium

$(VENV)/.e2e-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet --constraint $(CONSTRAINTS) --editable ".[test,e2e]"
	@touch $@

e2e: $(VENV)/.e2e-installed
	@missing=""; for p in $(E2E_APT); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing from Debian:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	$(PY) dev/e2e.py

# How close paging, bulk actions, imports and streaming come to their bounds (a benchmark, not a
# test: not part of make test). Prints one table with PASS/FAIL per target; see dev/bench.py.
.PHONY: bench
bench: install
	$(PY) dev/bench.py

# A local ClubCollect in the foreground, for trying DAGs by hand.
sandbox: install
	$(PY) -m airflow_provider_clubcollect.sandbox

# Re-pin the full install (run after changing dependencies, in a fresh venv).
constraints: install
	{ echo "# Pinned install for Python $(PYVER) (Airflow's constraints convention)."; \
	  echo "# Regenerate with: make constraints"; \
	  $(PY) -m pip freeze --exclude-editable | grep -vi '^airflow-provider-clubcollect'; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .demo .e2e
