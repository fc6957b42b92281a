# brokerstack developer entry points. `make test` is the README's test command and what CI runs.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
PYTEST  := $(PY) -m pytest
STAMP   := $(VENV)/.installed-stamp

.PHONY: test test-slow test-fast test-unit test-integration test-process test-chaos test-compose lint format venv clean-nodes measure

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,flower]'
	touch $(STAMP)

# Everything CI runs: the gates, the whole suite on the default driver (containers when Docker
# answers), and beside it the broker-backed integration tests once more on local broker processes.
# That second pass mostly waits for brokers to start, so it runs in the background; its output is
# printed once both have finished. Each pass takes broker ports from its own range, so neither can
# take the port of a broker the other has stopped and is about to start again.
# --durations: the CI log shows where the time goes.
DOCKER_PASS_PORTS  := 20000-25999
PROCESS_PASS_PORTS := 26000-31999

test: venv lint
	@log=$$(mktemp -t brokerstack-process-pass.XXXXXX); \
	BROKERSTACK_PORT_RANGE=$(PROCESS_PASS_PORTS) BROKERSTACK_TEST_DRIVER=process \
	  $(PYTEST) tests/integration -m "integration and not slow" --durations=30 -p no:cacheprovider > "$$log" 2>&1 & \
	process=$$!; \
	trap 'kill $$process 2>/dev/null; wait $$process; rm -f "$$log"; exit 130' INT TERM; \
	echo "process-driver pass: running in the background (pid $$process), its output follows the docker pass"; \
	BROKERSTACK_PORT_RANGE=$(DOCKER_PASS_PORTS) $(PYTEST) tests -m "not slow" --durations=30; first=$$?; \
	wait $$process; second=$$?; \
	echo "=============== process-driver pass (BROKERSTACK_TEST_DRIVER=process) ==============="; \
	cat "$$log"; rm -f "$$log"; \
	echo "make test: default-driver pass exit $$first, process-driver pass exit $$second"; \
	[ $$first -eq 0 ] && [ $$second -eq 0 ]

# The gates (configured in pyproject.toml): lint, formatting, types. `make format` fixes the first two.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# No broker, no Docker, well under a minute: settings, topology, the API on Celery's in-memory
# transport, the CLI, the ops report rendering.
test-fast: venv
	$(PYTEST) tests/fast tests/unit tests/bench/test_records.py tests/bench/test_peers.py tests/chaos/test_accounting.py -m "not slow"

test-unit: venv
	$(PYTEST) tests/unit

test-integration: venv
	$(PYTEST) tests/integration -m integration

test-process: venv
	BROKERSTACK_TEST_DRIVER=process $(PYTEST) tests/integration -m integration

test-chaos: venv
	$(PYTEST) tests/chaos -m "chaos and not slow"

test-compose: venv
	$(PYTEST) tests/compose -m compose

# Only the runs kept out of `make test` for their length (HA stacks, the quick bench, soaks).
test-slow: venv
	$(PYTEST) tests -m slow

# The measured runs behind docs/ops-comparison.md (well over an hour on a 2-core machine), then the doc.
measure: venv
	$(PY) -m services.cli chaos matrix --tasks 5000 --kills 3 --scenario broker-kill --scenario broker-restart --scenario worker-kill --scenario producer-outage --scenario publish-kill --scenario node-loss
	$(PY) -m services.cli chaos matrix --scenario idle-kill --scenario broker-restart-mid-task --kills 20 --tasks 200 --transport brokerstack --transport kombu --seed 9
	$(PY) -m services.cli chaos matrix --scenario rolling-deploy --kills 10 --tasks 240 --transport brokerstack --transport kombu --seed 9
	$(PY) -m services.cli chaos matrix --tasks 5000 --kills 3 --scenario power-loss --scenario power-loss-node --scenario power-loss-all --seed 20261129
	$(PY) -m services.cli chaos matrix --tasks 5000 --kills 3 --scenario power-loss --seed 20261130
	$(PY) -m services.cli chaos matrix --tasks 5000 --kills 3 --scenario power-loss --seed 20261131
	$(PY) -m services.cli chaos matrix --tasks 10000 --kills 3 --scenario delayed --driver docker
	$(PY) -m services.cli chaos matrix --tasks 5000 --kills 3 --scenario failover --scenario partition --driver docker --seed 1129
	$(PY) -m services.cli chaos matrix --tasks 5000 --kills 3 --scenario failover --scenario partition --driver docker --seed 1130
	$(PY) -m services.cli chaos matrix --tasks 5000 --kills 3 --scenario failover --scenario partition --driver docker --seed 1131
	$(PY) -m services.cli wait-cost --tasks 3000 --repetitions 3 --driver docker
	$(PY) -m services.cli chaos run --scenario worker-kill --setup redis-everysec --duration 16m --fault-interval 5 --visibility-timeout 5 --seed 11
	$(PY) -m services.cli chaos run --scenario worker-kill --setup redis-everysec --duration 16m --fault-interval 5 --visibility-timeout 5 --seed 11 --transport kombu
	$(PY) -m services.cli bench
	$(PY) -m services.cli priority
	$(PY) -m services.cli task-cost
	$(PY) -m services.cli idempotency-cost --driver docker
	$(PY) -m services.cli delayed-memory --driver docker
	$(PY) -m services.cli sizing
	$(PY) -m services.cli report --min-chaos-tasks 5000

# Leftover broker containers/processes of a crashed run.
clean-nodes: venv
	$(PY) -c "from lab.harness.nodes import remove_stale_nodes; print(remove_stale_nodes())"
