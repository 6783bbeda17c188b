# iq-etl: two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-unit lint test-slow test-remote test-all bench lock clean

# Pinned, hashed dependencies from requirements.lock (see `make lock`), then the package itself.
$(STAMP): pyproject.toml requirements.lock setup.py src/iq_etl/ingest/sources/car/_walker.c
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/iq-etl demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -m "not slow" -q

# The pure unit tests only (no warehouse, no servers): seconds, for the edit-test loop.
test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow -q

# The tests of every distinct warehouse path (marker `warehouse`, chosen in tests/conftest.py) again
# against a ClickHouse server over HTTP: the development server over chDB on loopback, or the
# disposable real server IQ_TEST_CLICKHOUSE_DSN names (its databases are dropped and recreated).
test-remote: $(STAMP)
	IQ_TEST_WAREHOUSE=remote $(BIN)/python -m pytest -m warehouse -q

test-all: lint
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

# The transform's scale curve up to 10M raw rows (minutes; `make bench` has the 0.3M and 3M points).
bench-scale: $(STAMP)
	$(BIN)/python bench/bench_transform_scale.py --points 0.3,3,10

# Re-resolve requirements.lock from pyproject.toml (the dependencies and the test extra) with uv.
# pip's --require-hashes wants an extra that a dependency asks for pinned with it: mashumaro[msgpack].
lock: $(STAMP)
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra test --python-version 3.11 --generate-hashes \
	    --custom-compile-command "make lock" -o requirements.lock
	sed -i 's/^mashumaro==/mashumaro[msgpack]==/' requirements.lock

clean:
	rm -rf $(VENV) .iq-etl exports build dist
