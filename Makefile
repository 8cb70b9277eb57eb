# tienda: `make run` starts the whole system, `make test` runs every test.
# Needs only Python 3.11+, make and a C compiler; everything else is installed into .venv.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MEMBERS := libs/contracts libs/platform auth_service product_service order_service gateway devstack
PYPROJECTS := pyproject.toml $(addsuffix /pyproject.toml,$(MEMBERS))
# tienda-platform's C extensions, compiled by its editable install
EXTENSIONS := libs/platform/setup.py $(wildcard libs/platform/src/tienda_platform/_*.c)
TEST_DIRS := libs/platform/tests auth_service/tests product_service/tests order_service/tests gateway/tests devstack/tests tests
PYTEST_ARGS ?=

.PHONY: install run test test-fast lint proto proto-check proto-lint bench dead-letters lock clean

install: $(STAMP)

$(STAMP): requirements.lock $(PYPROJECTS) $(EXTENSIONS)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "tienda needs Python 3.11 or newer")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q --require-hashes -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation $(addprefix -e ,$(MEMBERS))
	$(PY) -m compileall -q -j 0 $(VENV)/lib $(addsuffix /src,$(MEMBERS)) >/dev/null || true
	touch $@

run: $(STAMP)
	$(PY) -m tienda_devstack run

# pytest runs in PYTEST_WORKERS processes (pytest-xdist), each taking a whole test module at
# a time; the end-to-end tests wait on their services much of the time. 0 runs one process.
PYTEST_WORKERS ?= 2

test: $(STAMP) lint proto-check
	$(PY) -m pytest $(TEST_DIRS) -n $(PYTEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest $(TEST_DIRS) -m "unit or contract" $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy $(addsuffix /src,$(filter-out libs/contracts,$(MEMBERS))) tools

proto: $(STAMP)
	$(PY) tools/protogen.py

proto-check: $(STAMP) proto-lint
	$(PY) tools/protogen.py --check

proto-lint: $(STAMP)
	$(PY) tools/protogen.py --image build/tienda.binpb --check >/dev/null
	$(PY) tools/buf_check.py build/tienda.binpb

bench: $(STAMP)
	$(PY) -m tienda_devstack bench

# List, replay or purge dead letters: make dead-letters ARGS="replay --stream tienda.order.events"
dead-letters: $(STAMP)
	$(PY) -m tienda_platform.dead_letters $(or $(ARGS),list)

# Re-resolve dependencies (needs uv) and write the hashed lock that installs use.
lock:
	uv lock
	uv export --frozen --all-groups --no-emit-workspace --no-header --format requirements.txt -o requirements.lock

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
	rm -f libs/platform/src/tienda_platform/_*.so
