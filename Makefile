# kvkit: `make run` serves on embedded defaults, `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8000

LOCKS := requirements/runtime.txt requirements/dev.txt
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE ?= kvkit:$(VERSION)
IMAGE_SOURCE ?= https://example.invalid/kvkit
CONTAINERS_CONF ?= $(CURDIR)/scripts/containers.conf
export CONTAINERS_CONF

.PHONY: venv run test lint typecheck lint-deploy rules load load-ci bench capacity up down clean lock image

# The same locked versions as the image (requirements/runtime.txt), then the two projects on top.
$(STAMP): pyproject.toml client/pyproject.toml $(LOCKS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes $(addprefix -r ,$(LOCKS))
	$(BIN)/python -m pip install --quiet --no-deps -e . -e ./client
	touch $(STAMP)

venv: $(STAMP)

run: venv  ## Serve on http://127.0.0.1:8000 with SQLite and the in-process limiter.
	$(BIN)/python -m app migrate
	@echo "kvkit on http://$(HOST):$(PORT)  (OpenAPI docs: http://$(HOST):$(PORT)/docs)"
	LOG_FORMAT=$${LOG_FORMAT:-text} $(BIN)/uvicorn app.main:app --host $(HOST) --port $(PORT) --no-proxy-headers \
		--http app.server.protocol:BoundedHttpProtocol --timeout-keep-alive $${GUNICORN_KEEPALIVE:-75} \
		--limit-concurrency $${GUNICORN_WORKER_CONNECTIONS:-1000}

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy
	$(BIN)/mypy client/src

lint-deploy: venv  ## Dockerfile, compose, Kubernetes and Prometheus checks (installs promtool as root).
	PATH="$(CURDIR)/$(BIN):$$PATH" scripts/lint-deploy.sh

rules: venv  ## Regenerate k8s/optional/prometheusrule from monitoring/prometheus/alerts.yml.
	$(BIN)/python scripts/k8s_monitoring.py

test: venv lint typecheck lint-deploy load-ci  ## Every test, against real PostgreSQL, MariaDB and Redis.
	$(BIN)/python -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest ran no tests" >&2; exit 1; fi; exit $$status

load: venv  ## Locust against gunicorn + PostgreSQL + Redis; fails past thresholds (LOAD_ARGS="--run-time 60s --users 20").
	$(BIN)/python loadtests/run_load.py $(LOAD_ARGS)

load-ci: venv  ## A short load run and a short rate-limit run, as CI does.
	$(BIN)/python loadtests/run_load.py --run-time 15s --users 5 --max-error-ratio 0 --max-p95-ms 1000
	$(BIN)/python loadtests/run_load.py --scenario ratelimit --run-time 10s --users 3 --max-error-ratio 0 --max-p95-ms 1000

bench: venv  ## wrk benchmark of every workload against the framework ceiling (BENCH_ARGS="--duration 10 --scale").
	command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	$(BIN)/python loadtests/bench.py $(BENCH_ARGS)

capacity: venv  ## What a GET and a PUT cost kvkit, PostgreSQL and Redis in CPU, and each backend's ceiling (docs/SCALING.md).
	command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	$(BIN)/python loadtests/capacity.py $(CAPACITY_ARGS)

up:  ## The full stack in Docker: API, PostgreSQL, Redis, Prometheus, Grafana, tracing.
	test -f .env.compose || { echo "copy .env.compose.example to .env.compose and set its values" >&2; exit 1; }
	docker compose --env-file .env.compose up --build -d

down:
	docker compose --env-file .env.compose down

lock:  ## Re-resolve requirements/*.txt with hashes (uv in a throwaway venv), then `make venv`.
	PYTHON=$(PYTHON) scripts/lock.sh

image:  ## Build $(IMAGE): docker when a daemon answers, else buildah (IMAGE_SOURCE= sets the source label).
	@set -e; \
	args="--build-arg VERSION=$(VERSION) --build-arg REVISION=$$(git rev-parse HEAD) --build-arg SOURCE=$(IMAGE_SOURCE)"; \
	if docker info >/dev/null 2>&1; then \
		docker build $$args -f docker/Dockerfile -t $(IMAGE) .; \
	else \
		buildah --storage-driver vfs bud --layers --isolation chroot --network host --format docker \
			-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
			$$args $(IMAGE_BUILD_ARGS) -f docker/Dockerfile -t $(IMAGE) .; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache kvkit.sqlite3*
