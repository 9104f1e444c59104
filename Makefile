# Every target calls a script in ci/, the same scripts CI and the workflow run.
.DEFAULT_GOAL := help
HOST ?= 127.0.0.1
PORT ?= 8003

.PHONY: help install run test lint docs stress stress-ui stress-t02 stress-t03 bench docker clean

help:
	@echo "make run    - install the service if needed (no dev tools), serve on $(HOST):$(PORT)"
	@echo "make test   - install everything if needed, lint and run the whole test suite"
	@echo "make lint | install | docs | stress | stress-ui | stress-t02 | stress-t03 | bench | docker"

install:
	bash ci/install

run:
	bash ci/install --quiet --service
	.venv/bin/cc-executor serve --host $(HOST) --port $(PORT)

test:
	bash ci/install --quiet
	bash ci/lint
	bash ci/test

lint:
	bash ci/install --quiet
	bash ci/lint

docs:
	bash ci/install --quiet
	bash ci/docs

stress:
	bash ci/install --quiet
	bash ci/stress

stress-ui:
	bash ci/install --quiet
	bash ci/stress --ui

stress-t02:
	bash ci/install --quiet
	bash ci/stress --t02

stress-t03:
	bash ci/install --quiet
	bash ci/stress --t03

bench:
	bash ci/install --quiet
	bash ci/bench

docker:
	bash ci/docker

clean:
	rm -rf .venv node_modules .pytest_cache .mypy_cache .ruff_cache stress/reports
