# Two commands do all the set-up: `make run` (the reference comparison) and `make test`.
# Both create .venv when absent and install the project into it, torch pinned by constraints.txt.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Data for the emotion task: DATA=path/to/emotions.csv, else $$MODELSHRINK_DATA, the cache, the Hub.
DATA ?=
ARGS ?=

.PHONY: run test quick setup browser lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,hub]"
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/modelshrink run $(if $(DATA),--data $(DATA)) $(ARGS)

quick: $(STAMP)
	$(VENV)/bin/modelshrink run --preset quick $(if $(DATA),--data $(DATA)) $(ARGS)

# The report's browser test needs Chromium. It is installed here, as root with apt-get, so that the
# tests themselves send nothing past loopback; elsewhere the browser test skips and says why.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || [ "$$(id -u)" != 0 ] \
	  || ! command -v apt-get >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	  --no-install-recommends chromium || { apt-get update -q && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -q --no-install-recommends chromium; } || true

test: $(STAMP) browser
	$(PY) -m pytest -q $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy src

clean:
	rm -rf $(VENV) runs .pytest_cache
