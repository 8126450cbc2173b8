# The README's commands. Everything installs into a local virtual environment (.venv).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do command -v $$p >/dev/null && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' && echo $$p && break; done)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# loadgroup: the end-to-end tests (xdist_group "stack") share one worker and so one stack.
PYTEST_ARGS ?= -n 2 --dist loadgroup

.PHONY: venv demo test lint check-defs ui up down workers workers-stop bench bench-import bench-workflow bench-analytics bench-notifications bench-process bench-latency bench-backfill bench-wave clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python >= 3.11 is required"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: venv
	$(BIN)/ordersys demo

test: venv
	$(BIN)/ruff check .
	$(MAKE) check-defs
	$(BIN)/pytest $(PYTEST_ARGS)

# `dg check defs`: the code location loads, without warnings, on a throw-away instance.
check-defs: venv
	@home=$$(mktemp -d) && printf "telemetry:\n  enabled: false\n" > "$$home/dagster.yaml" && \
	VIRTUAL_ENV="$(abspath $(VENV))" DAGSTER_HOME="$$home" $(BIN)/dg check defs; \
	rc=$$?; rm -rf "$$home"; exit $$rc

lint: venv
	$(BIN)/ruff check .

ui: up

up: venv
	scripts/stack.sh up

down:
	scripts/stack.sh down

# Celery workers for the op jobs' steps (ORDERSYS_EXECUTOR=celery; docs/celery.md).
N ?= 2
workers: venv
	scripts/workers.sh start $(N)

workers-stop:
	scripts/workers.sh stop

bench: bench-import bench-workflow bench-analytics bench-notifications bench-process

bench-import: venv
	$(BIN)/python bench/import_bench.py

bench-workflow: venv
	$(BIN)/python bench/workflow_bench.py

bench-analytics: venv
	$(BIN)/python bench/analytics_bench.py

bench-notifications: venv
	$(BIN)/python bench/notifications_bench.py --webhook $(BENCH_ARGS)

bench-process: venv
	$(BIN)/python bench/process_bench.py $(BENCH_ARGS)

# The running stack, drop to done: the defaults next to the settings before (BENCH_ARGS e.g. "--rows 100000 --pg").
BENCH_ARGS ?=
bench-latency: venv
	$(BIN)/python bench/latency_bench.py $(BENCH_ARGS)

bench-backfill: venv
	$(BIN)/python bench/backfill_bench.py

bench-wave: venv
	$(BIN)/python bench/wave_bench.py $(BENCH_ARGS)

clean:
	rm -rf .ordersys data .dagster_home
