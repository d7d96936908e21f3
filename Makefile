# Scarp: `make run` starts the app, `make test` runs the suite. Both set up everything they need first
# and do nothing more when nothing changed (stamp files record what was installed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMPS := .make
export SCARP_WORKSPACE ?= $(CURDIR)/workspace
PORT ?= 8501

.PHONY: setup run test lint format clean accuracy bench

setup: $(STAMPS)/runtime $(STAMPS)/static

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Scarp needs Python 3.11 or newer"'
	$(PYTHON) -m venv $(VENV)

$(STAMPS)/runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/dev: requirements-dev.txt $(STAMPS)/runtime
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@mkdir -p $(STAMPS) && touch $@

# Headless Chromium for the browser tests: Debian's package, driven by Playwright (requirements-dev.txt).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
$(STAMPS)/browser:
	command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }
	@mkdir -p $(STAMPS) && touch $@

# Leaflet and Leaflet.draw from the npm registry, served from app/static so maps need no internet.
$(STAMPS)/static: package.json package-lock.json
	npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	rm -rf app/static/leaflet app/static/leaflet-draw
	mkdir -p app/static
	cp -r node_modules/leaflet/dist app/static/leaflet
	cp -r node_modules/leaflet-draw/dist app/static/leaflet-draw
	@mkdir -p $(STAMPS) && touch $@

run: setup
	$(BIN)/python -c 'from engine import api; print("job worker pid", api.ensure_worker(api.open_workspace()))'
	$(BIN)/streamlit run app/Home.py --server.port $(PORT)

test: setup $(STAMPS)/dev $(STAMPS)/browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

# Five reviewers in real browsers for two minutes against one app and one worker; prints p50/p95 page
# load and save latency (docs/BENCHMARKS.md, "Concurrent reviewers (load)"). Not part of `make test`.
.PHONY: bench-load
bench-load: setup $(STAMPS)/dev $(STAMPS)/browser
	$(BIN)/python -m tests.browser.load_bench --sessions 5 --minutes 2

# Whole-scene inference against the naive way, roofline and training throughput on this machine,
# written to docs/BENCHMARKS.md (about an hour on a 2-core CPU; `python -m engine bench infer --quick`
# is a smoke run).
bench: setup
	$(BIN)/python -m engine bench infer

# Regenerates docs/ACCURACY.md from the shipped models (minutes on a CPU).
accuracy: setup
	$(BIN)/python -m engine bench accuracy

lint: $(STAMPS)/dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMPS)/dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(STAMPS) node_modules app/static
