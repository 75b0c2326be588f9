# `make run` and `make test` are all a newcomer needs on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Browser tests drive Debian's Chromium (never a downloaded browser); the metrics test
# has a real Prometheus scrape the daemon (Debian's package too).
CHROMIUM := /usr/bin/chromium
PROMETHEUS := /usr/bin/prometheus
# The Slurm executor's tests start a real one-node Slurm (Debian's slurm-wlm and munge).
SLURMCTLD := /usr/sbin/slurmctld
# The partition test puts nodes in network namespaces (iproute2's ip).
IPROUTE := /usr/sbin/ip

.PHONY: run test test-heavy lint format bench docs clean bytecode

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# compat: the checkout on sys.path by a plain .pth; the default finder costs every
	# Python start (each CLI command, the daemon) about 10 ms of imports
	$(BIN)/pip install --quiet -c requirements.lock --config-settings editable_mode=compat \
	  -e '.[test,postgres]'
	touch $(STAMP)

# The keeper's clone3 into a job's cgroup (zephserver/launch/spawn_into.c), a plain shared
# library it loads with ctypes. Without a C compiler the keeper moves itself into each
# job's cgroup instead (slower, and said in DATA_DIR/keeper.log): the build may fail.
SPAWN_INTO := zephserver/launch/spawn_into.so
$(SPAWN_INTO): zephserver/launch/spawn_into.c
	$(CC) -O2 -Wall -Wextra -shared -fPIC -o $@ $< || \
	  echo "$@ not built: jobs will enter their cgroups by migration"

# The daemon's heap once started (zephserver/settled_heap.c), likewise loaded with ctypes.
# Without it the daemon's objects come from glibc's heap from its start (1.3 MiB more).
SETTLED_HEAP := zephserver/settled_heap.so
$(SETTLED_HEAP): zephserver/settled_heap.c
	$(CC) -O2 -Wall -Wextra -shared -fPIC -o $@ $< || \
	  echo "$@ not built: the daemon's objects will come from glibc's heap from its start"

# Bytecode written ahead (a no-op when current): where PYTHONDONTWRITEBYTECODE is set, every
# start would compile each module again (a CLI command took twice as long). The daemon
# runs without docstrings (-OO: zephserver/interpreter.py), so its bytecode is written at
# that level too, for the checkout and for the libraries the daemon loads.
DAEMON_LIBS := tornado zmq django lockfile cryptography prometheus_client sqlparse asgiref \
  psycopg psycopg_binary
bytecode: $(STAMP) $(SPAWN_INTO) $(SETTLED_HEAP)
	$(BIN)/python -m compileall -q -o 0 -o 2 zephserver commands settings main.py
	$(BIN)/python -m compileall -q -o 2 \
	  $(wildcard $(addprefix $(VENV)/lib/python*/site-packages/,$(DAEMON_LIBS)))

run: bytecode
	$(BIN)/zephserver-admin migrate --noinput
	$(BIN)/zephserver-start

$(CHROMIUM):
	DEBIAN_FRONTEND=noninteractive apt-get install -y chromium || \
	  (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

$(PROMETHEUS):
	DEBIAN_FRONTEND=noninteractive apt-get install -y prometheus || \
	  (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y prometheus)

$(SLURMCTLD):
	DEBIAN_FRONTEND=noninteractive apt-get install -y slurm-wlm munge || \
	  (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y slurm-wlm munge)

$(IPROUTE):
	DEBIAN_FRONTEND=noninteractive apt-get install -y iproute2 || \
	  (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y iproute2)

test: bytecode $(CHROMIUM) $(PROMETHEUS) $(SLURMCTLD) $(IPROUTE)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# The reliability suite at full size: 20,000 jobs, 1,000 idle WebSockets, 20,000 fuzzed
# frames... (make test runs a reduced count of each).
test-heavy: bytecode $(CHROMIUM) $(PROMETHEUS)
	ZEPH_HEAVY=1 $(BIN)/python -m pytest tests/reliability

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The manual: reference pages generated from the code, then HTML in site/ (strict).
docs: $(STAMP)
	$(BIN)/python -m zephserver.reference docs/reference
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: bytecode
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) var build site *.egg-info $(SPAWN_INTO) $(SETTLED_HEAP)
