# Two commands do all the set-up: `make run` (the reference comparison) and `make test`.
# Both create .venv when absent and install the project into it, torch pinned by constraints.txt:
# `make run` what running needs (the `hub` extra), `make test` also the `dev` tools.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
# `make test-lowest`: the lowest versions pyproject.toml allows for the direct dependencies, in their own venv.
LOWEST ?= .venv-lowest
LOWEST_TESTS ?= tests/test_lowest.py tests/test_config.py tests/runner/test_search.py tests/export/test_compact.py \
	tests/export/test_onnx.py tests/test_cli.py
# Data for the emotion task: DATA=path/to/emotions.csv, else $$MODELSHRINK_DATA, the cache, the Hub.
DATA ?=
ARGS ?=
# `make run` trains in JOBS worker processes and measures in one (docs/sweeps.md, "Executors"): the cores, at
# most 3 (the reference comparison's 3 seeds never keep more busy); JOBS=1 runs everything in one process.
JOBS ?= $(shell n=$$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1); [ "$$n" -gt 3 ] && n=3; echo $$n)

.PHONY: run test test-long test-lowest quick setup browser lint clean fuzz

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[hub]"
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,hub]"
	touch $(DEV_STAMP)

setup: $(DEV_STAMP)

run: $(STAMP)
	$(VENV)/bin/modelshrink run --jobs $(JOBS) $(if $(DATA),--data $(DATA)) $(ARGS)

quick: $(STAMP)
	$(VENV)/bin/modelshrink run --preset quick $(if $(DATA),--data $(DATA)) $(ARGS)

# The report's browser test needs Chromium. It is installed here, as root with apt-get, so that the
# tests themselves send nothing past loopback; elsewhere the browser test skips and says why.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || [ "$$(id -u)" != 0 ] \
	  || ! command -v apt-get >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	  --no-install-recommends chromium || { apt-get update -q && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -q --no-install-recommends chromium; } || true

test: $(DEV_STAMP) browser
	$(PY) -m pytest -q $(ARGS)

# Tests that take minutes each (a real multi-node Ray cluster with a node killed mid-row), left out of `make test`.
test-long: $(DEV_STAMP)
	$(PY) -m pytest -q -m long $(ARGS)

# The fuzzer for humans: fresh random examples (`make test` runs a fixed, small set). FUZZ_EXAMPLES per target.
FUZZ_EXAMPLES ?= 5000
fuzz: $(DEV_STAMP)
	MODELSHRINK_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q tests/hostile/test_fuzz.py $(ARGS)

# uv resolves the direct dependencies to their floors (`--resolution lowest-direct`). torch is the one
# exception: it stays the 2.13.0 pinned by constraints.txt (pip installs it first; a torch 2.5 CPU build
# would be another download of about 200 MB, and a CUDA one several GB), so its floor is not exercised here.
test-lowest:
	test -x $(LOWEST)/bin/python || python3 -m venv $(LOWEST)
	$(LOWEST)/bin/pip install -q -c constraints.txt torch uv
	$(LOWEST)/bin/uv pip install -q --python $(LOWEST)/bin/python --resolution lowest-direct \
	  -c constraints.txt -e ".[test]"
	$(LOWEST)/bin/python -m pytest -q -p no:cacheprovider $(LOWEST_TESTS)

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy src

clean:
	rm -rf $(VENV) $(LOWEST) runs .pytest_cache
