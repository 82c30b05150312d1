# Two commands from a fresh clone: `make demo` and `make test` (see README).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-browser test-postgres lint format bench simulate clean misra

# The CPU wheel of torch goes first: an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "setuptools<81" wheel
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev,ray]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tailorml demo

test: $(STAMP)
	$(BIN)/python -m pytest

# The review page in a real browser: needs Debian's Chromium (apt-get install chromium) and
# the browser extra; Playwright drives the system browser and downloads nothing.
test-browser: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[browser]"
	$(BIN)/python -m pytest -m browser tests/service/test_review_page.py tests/service/test_push_browser.py

# The service suites again with their tables in PostgreSQL (a PostgreSQL 16 that pgserver, from
# PyPI, starts in a temporary directory): the store's contract and the multi-process tests
# already run on both backends in `make test`; these double the service suites' time.
test-postgres: $(STAMP)
	$(BIN)/python -m pytest -m "postgres_suites and not browser" tests/service

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

# MISRA C:2012 check of freshly generated model C (the default network, seeded weights) with
# cppcheck's misra addon: needs Debian's cppcheck (apt-get install cppcheck), so not part of
# `make test`. Fails on any finding not justified, one reason per rule, in
# src/tailorml/deploy/int8/misra.suppressions (docs/deployment.md, "MISRA").
misra: $(STAMP)
	@out=$$(mktemp -d) && $(BIN)/python -m tailorml.deploy.int8.c $$out >/dev/null && \
	cppcheck --addon=misra --std=c99 --platform=arm32-wchar_t2 --quiet --error-exitcode=1 \
		--suppressions-list=src/tailorml/deploy/int8/misra.suppressions $$out/tailorml_model.c; \
	status=$$?; rm -rf $$out; \
	if [ $$status -eq 0 ]; then echo "misra: no finding beyond the justified rules"; fi; \
	exit $$status

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_simulation.py
	$(BIN)/python benchmarks/bench_batched_simulation.py
	$(BIN)/python benchmarks/bench_demo.py
	$(BIN)/python benchmarks/bench_certify.py

# Regenerate the shipped synthetic cohort (about 2 minutes on 2 cores) with the engine that
# made it (its metadata says so; the batched engine gives the same values).
simulate: $(STAMP)
	$(BIN)/tailorml cohort simulate --engine reference --out src/tailorml/data/default_cohort/virtual_t1d_cohort.parquet --force

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
