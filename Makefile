# Loyalty Relay: the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-unit lint bench chaos sandbox clean promtool up down

COMPOSE ?= docker compose
COMPOSE_FILE := deploy/compose/docker-compose.yml

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: install
	$(BIN)/relay run

# Two pytest processes, one test file each at a time: integration tests spend most of their time
# waiting on brokers and workers, so two files overlap well on two cores (about 6.5 min, not 9.5).
TEST_WORKERS ?= 2

test: install promtool
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# promtool (Debian's prometheus package) checks and unit-tests deploy/prometheus/alerts.yml.
promtool:
	@command -v promtool >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing promtool (apt-get install prometheus)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else echo "promtool missing and not root: the promtool tests will skip"; fi; }

# The relay next to a real Kafka with Prometheus, Grafana and the sandbox (deploy/compose/).
up:
	COMPOSE_PROFILES=sandbox $(COMPOSE) -f $(COMPOSE_FILE) up -d --build

down:
	COMPOSE_PROFILES=sandbox $(COMPOSE) -f $(COMPOSE_FILE) down -v

test-unit: install
	$(BIN)/python -m pytest -q tests/unit

lint: install
	$(BIN)/ruff check app tests

bench: install
	$(BIN)/relay bench

chaos: install
	$(BIN)/relay chaos

sandbox: install
	$(BIN)/relay sandbox

clean:
	rm -rf $(VENV) var .pytest_cache
