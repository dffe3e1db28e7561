# The two commands a new user runs: `make demo` and `make test`.
PYTHON ?= python3

# --- Python versions and constraints ------------------------------------------------------------
# Airflow 3.3 supports Python 3.10 to 3.13: each has a pinned constraints file, made by
# `make constraints PYTHON=...`.  Python 3.11 uses .venv; any other version its own .venv-3.X,
# so that several can live side by side.
# The provider also supports Airflow 2.11 to 3.2: AIRFLOW=X.Y (e.g. `make test AIRFLOW=2.11`) uses
# constraints-airflow-X.Y.txt and its own .venv-airflow-X.Y, on Python 3.11 only (one Python is
# enough to catch what differs between Airflows).  AIRFLOW unset or 3.3: the per-Python files.
SUPPORTED_PYTHONS := 3.10 3.11 3.12 3.13
SUPPORTED_AIRFLOWS := 2.11 3.0 3.1 3.2 3.3
comma := ,
AIRFLOW_MINOR := $(or $(strip $(AIRFLOW)),3.3)
ifneq ($(filter-out $(SUPPORTED_AIRFLOWS),$(AIRFLOW_MINOR))$(word 2,$(AIRFLOW_MINOR)),)
$(error AIRFLOW=$(AIRFLOW) is not supported: use one of $(SUPPORTED_AIRFLOWS), e.g. 'make test AIRFLOW=2.11' (unset means 3.3))
endif
# An older Airflow takes python3.11 unless PYTHON names another Python 3.11.
ifneq ($(AIRFLOW_MINOR),3.3)
ifeq ($(origin PYTHON),file)
PYTHON := python3.11
endif
endif
PYVER := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
ifeq ($(AIRFLOW_MINOR),3.3)
ifeq ($(filter $(PYVER),$(SUPPORTED_PYTHONS)),)
$(error PYTHON=$(PYTHON) is $(if $(PYVER),Python $(PYVER),not a Python that runs here). Airflow 3.3 and this provider support Python $(SUPPORTED_PYTHONS): run e.g. 'make test PYTHON=python3.12', or with pyenv 'make test PYTHON=$$(pyenv prefix 3.13.0)/bin/python3.13')
endif
VENV := $(if $(filter 3.11,$(PYVER)),.venv,.venv-$(PYVER))
CONSTRAINTS := constraints-$(PYVER).txt
CONSTRAINTS_FOR := Python $(PYVER)
CONSTRAINTS_ARGS := PYTHON=$(PYTHON)
REGENERATE_ARGS := PYTHON=python$(PYVER)
# A new constraints file holds Airflow at the version the reference file pins.
REFERENCE_CONSTRAINTS := constraints-3.11.txt
NEW_PINS = grep -E '^apache-airflow(-core|-task-sdk)?==' $(REFERENCE_CONSTRAINTS)
else
ifneq ($(PYVER),3.11)
$(error Airflow $(AIRFLOW_MINOR) is pinned for Python 3.11 only, and PYTHON=$(PYTHON) is $(if $(PYVER),Python $(PYVER),not a Python that runs here): install python3.11, or name one with e.g. 'make test AIRFLOW=$(AIRFLOW_MINOR) PYTHON=$$(pyenv prefix 3.11.7)/bin/python3.11')
endif
VENV := .venv-airflow-$(AIRFLOW_MINOR)
CONSTRAINTS := constraints-airflow-$(AIRFLOW_MINOR).txt
CONSTRAINTS_FOR := Airflow $(AIRFLOW_MINOR)
CONSTRAINTS_ARGS := AIRFLOW=$(AIRFLOW_MINOR)
REGENERATE_ARGS := AIRFLOW=$(AIRFLOW_MINOR)
# A new constraints file holds Airflow at that minor's newest release.  Its other dependencies then
# resolve to today's newest, which an older Airflow may not survive: the existing files started from
# `uv pip compile --exclude-newer <the release's upload day>` (newer common-compat and standard allowed).
NEW_PINS = echo 'apache-airflow==$(AIRFLOW_MINOR).*'
endif
PY := $(VENV)/bin/python
EXTRAS := test,docs
# Airflow 2.11's file also pins the e2e extra (a deployment test on 2.11 with PostgreSQL).
CONSTRAINTS_EXTRAS := $(EXTRAS)$(if $(filter 2.11,$(AIRFLOW_MINOR)),$(comma)e2e)
# --- end of Python versions and constraints -----------------------------------------------------

.PHONY: install test lint typecheck pytest unit redis-server demo sandbox constraints docs docs-check clean e2e screenshot bench e2e-airflow2 getting-started size

# __init__.py holds the version the installed metadata carries.  $(wildcard ...): a missing constraints
# file gets the message below, not make's "No rule to make target".
$(VENV)/.installed: pyproject.toml airflow_provider_clubcollect/__init__.py $(wildcard $(CONSTRAINTS))
	@test -f $(CONSTRAINTS) || { echo "No $(CONSTRAINTS) for $(CONSTRAINTS_FOR): create it with 'make constraints $(CONSTRAINTS_ARGS)' (a full install, several minutes)."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --constraint $(CONSTRAINTS) --editable ".[$(EXTRAS)]"
	@touch $@

install: $(VENV)/.installed

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

# Two pytest-xdist workers, each with its own Airflow home (tests/conftest.py): most tests wait on
# sockets, so two workers halve the time even beside the docs build.
pytest: install redis-server
	$(PY) -m pytest -n 2

# The unit tests: everything but the tests that run DAGs with real Airflow (marker `dag`).
unit: install redis-server
	$(PY) -m pytest -n 2 -m "not dag"

# Debian's redis-server, for the tests of the budget shared through Redis (tests/test_budget_redis.py
# starts one on a free loopback port): installed when missing and root; otherwise those tests skip,
# saying why, and the rest runs.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "Installing from Debian: redis-server"; \
	    { apt-get -o DPkg::Lock::Timeout=300 update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends redis-server >/dev/null; } \
	    || echo "Could not install redis-server: the shared request budget's tests will skip."; \
	  else \
	    echo "No redis-server (sudo apt-get install redis-server): the shared request budget's tests will skip."; \
	  fi; }

# The docs (Sphinx, then Chromium) and pytest share nothing and each keeps one core busy: they run
# side by side, which takes about 25 s off `make test`.  Lint and type checks come first, as fast failures.
# redis-server first: installing it beside docs-check's Chromium would race for apt's lock.
test: lint typecheck redis-server
	$(MAKE) --no-print-directory -j2 --output-sync=line docs-check pytest

demo: install
	$(PY) dev/demo.py

# docs/getting-started.rst followed to the letter: its commands, read from the page, in a fresh venv
# with the wheel built from this checkout and Airflow under constraints (about 2 minutes from pip's
# cache; not part of make test).  See tests/test_getting_started.py.
getting-started: install
	CLUBCOLLECT_GETTING_STARTED=1 $(PY) -m pytest tests/test_getting_started.py

# The provider in a real deployment (needs root: it installs Debian's PostgreSQL and Redis when
# missing, and runs PostgreSQL as the postgres user). See dev/e2e.py.
E2E_APT := postgresql redis-server

$(VENV)/.e2e-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet --constraint $(CONSTRAINTS) --editable ".[$(EXTRAS),e2e]"
	@touch $@

e2e: $(VENV)/.e2e-installed
	@missing=""; for p in $(E2E_APT); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing from Debian:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	$(PY) -m dev.e2e

# The connection form's screenshots in docs/img (docs/connection.rst): Airflow's api-server alone,
# on SQLite, and headless Chromium.  Not part of make e2e: run it when the form changes.
screenshot: $(VENV)/.e2e-installed | $(CHROMIUM)
	$(PY) -m dev.screenshot

# A short deployment on Airflow 2.11 (PostgreSQL, scheduler, triggerer, LocalExecutor) in its own
# venv, whatever AIRFLOW says: the deferrable sensor resumed by the triggerer, the archive example,
# secrets masking.  Needs root, like e2e.  See dev/e2e_airflow2.py.
E2E_AIRFLOW2_VENV := .venv-airflow-2.11

e2e-airflow2:
	$(MAKE) --no-print-directory AIRFLOW=2.11 $(E2E_AIRFLOW2_VENV)/.e2e-installed
	@dpkg -s postgresql >/dev/null 2>&1 || { \
	  echo "Installing from Debian: postgresql"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null; \
	}
	$(E2E_AIRFLOW2_VENV)/bin/python -m dev.e2e_airflow2

# How close paging, bulk actions, imports and streaming come to their bounds (a benchmark, not a
# test: not part of make test). Prints one table with PASS/FAIL per target; see dev/bench.py.
bench: install
	$(PY) dev/bench.py

# Issue 21's size measure: non-blank lines, the sandbox excluded from the package.
REQUEST_LAYER := $(addprefix airflow_provider_clubcollect/,wire.py transport.py retry.py paging.py connection.py exceptions.py limiter.py hooks/clubcollect.py)
# Modules whole from wave 3's later issues (22 examples, 23 budget, 24 metrics), filed beside issue 21.
LATER_MODULES := examples.py budget.py observability.py
size:
	@printf '%6d  package without the sandbox (at most 3,000)\n' $$(find airflow_provider_clubcollect -name '*.py' -not -path '*/sandbox/*' -exec cat {} + | grep -cv '^\s*$$')
	@printf '%6d  the same without the modules issues 22-24 added beside it (examples.py, budget.py, observability.py)\n' $$(find airflow_provider_clubcollect -name '*.py' -not -path '*/sandbox/*' $(LATER_MODULES:%=-not -name %) -exec cat {} + | grep -cv '^\s*$$')
	@printf '%6d  request layer: wire, transport, retry, paging, connection, exceptions, limiter, hook (at most 1,450)\n' $$(cat $(wildcard $(REQUEST_LAYER)) | grep -cv '^\s*$$')
	@printf '%6d  the same without limiter.py, as the issue lists the layer\n' $$(cat $(filter-out %/limiter.py,$(wildcard $(REQUEST_LAYER))) | grep -cv '^\s*$$')
	@printf '%6d  dev/e2e.py (at most 700)\n' $$(grep -cv '^\s*$$' dev/e2e.py)

# A local ClubCollect in the foreground, for trying DAGs by hand.
sandbox: install
	$(PY) -m airflow_provider_clubcollect.sandbox

# --- constraints ---------------------------------------------------------------------------------
# Pin the full install for this Python (or Airflow).  With a constraints file, the install keeps its
# pins and new dependencies get the newest release (run after changing dependencies); without one,
# the install resolves afresh, with Airflow held as NEW_PINS says: for Airflow 3.3, apache-airflow,
# -core and -task-sdk at constraints-3.11.txt's pins; its bundled providers may differ per Python
# (smtp 3.2.0 needs 3.11+).
constraints:
	$(PYTHON) -m venv $(VENV)
	if test -f $(CONSTRAINTS); then cp $(CONSTRAINTS) $(VENV)/pins.txt; \
	else $(NEW_PINS) > $(VENV)/pins.txt; fi
	$(PY) -m pip install --quiet --constraint $(VENV)/pins.txt --editable ".[$(CONSTRAINTS_EXTRAS)]"
	{ echo "# Pinned install for Python $(PYVER), Airflow $$($(PY) -c 'from importlib.metadata import version; print(version("apache-airflow"))') (Airflow's constraints convention)."; \
	  echo "# Regenerate with: make constraints $(REGENERATE_ARGS)"; \
	  $(PY) -m pip freeze --exclude-editable | grep -vi '^airflow-provider-clubcollect'; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)
	@touch $(VENV)/.installed
# --- end of constraints --------------------------------------------------------------------------

# --- docs ----------------------------------------------------------------------------------------
# The Sphinx site, from scratch each time (an incremental build would not repeat the warnings of
# unchanged pages), warnings as errors.  Autodoc imports the package, so it builds in the venv.
DOCS_HTML := docs/_build/html
CHROMIUM := /usr/bin/chromium

docs: install
	rm -rf docs/_build
	$(VENV)/bin/sphinx-build -W --keep-going -q -b html docs $(DOCS_HTML)
	@echo "Built $(DOCS_HTML)/index.html"

# Debian's chromium, installed when missing (apt needs root).
$(CHROMIUM):
	@test "$$(id -u)" = 0 || { echo "$(CHROMIUM) is missing: install Debian's chromium (sudo apt-get install -y chromium)."; exit 1; }
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

# Headless Chromium opens the built pages: the connection form's screenshot, an operator guide's example.
# Build and check are done again when one of their inputs changed (the docs, the code autodoc reads,
# the included examples, the checker, the install); otherwise the last build, which passed with
# warnings as errors, still holds, and `make test` saves their 20 s.  `make docs` always rebuilds.
DOCS_INPUTS := $(shell find docs -path docs/_build -prune -o -type f -print) \
	$(shell find airflow_provider_clubcollect example_dags -name '*.py') \
	tests/sandbox/test_fixture_example.py dev/check_docs.py pyproject.toml README.md
DOCS_CHECKED := docs/_build/.checked

docs-check: $(DOCS_CHECKED)

$(DOCS_CHECKED): $(VENV)/.installed $(DOCS_INPUTS) | $(CHROMIUM)
	$(MAKE) --no-print-directory docs
	$(PY) dev/check_docs.py $(DOCS_HTML) --chromium $(CHROMIUM)
	@touch $@
# --- end of docs ---------------------------------------------------------------------------------

clean:
	rm -rf .venv .venv-3.* .venv-airflow-* .mypy_cache .ruff_cache .pytest_cache .demo docs/_build .e2e .screenshot
