# imgpipe: `make demo` runs the pipeline end to end on the local stack; `make test` runs every test against it.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# The local stack's endpoints (written by scripts/stack/start.sh) exported into every recipe that needs them.
WITH_STACK := set -a && source .stack/env && set +a &&
comma := ,

.PHONY: help stack stop test check-mutations demo local bench-ingest bench-pipeline bench-codec capacity build fmt lint

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

stack: ## install (once) and start S3 (imgpipe-local-s3), SQS (ElasticMQ) and MongoDB (FerretDB) on 127.0.0.1, then migrate
	bash scripts/stack/start.sh
	$(WITH_STACK) set -a && source scripts/local.env && set +a && "$$(bash scripts/bins.sh)/imgpipe-admin" migrate >/dev/null

stop: ## stop the local runner and the stack servers started by these scripts
	bash scripts/local.sh stop || true
	bash scripts/stack/stop.sh

test: stack ## run the whole test suite against the local stack, then the OpenAPI contract check
	$(WITH_STACK) cargo test --workspace --locked
	$(WITH_STACK) bash scripts/contract.sh

check-mutations: stack ## apply each tests/mutations/*.patch to a scratch copy; fail unless the test it names fails
	$(WITH_STACK) bash scripts/check-mutations.sh

demo: stack ## a sample CSV through the local runner: compressed images and an output CSV out
	$(WITH_STACK) bash scripts/demo.sh

local: stack ## serve the API on http://127.0.0.1:3000 and run the worker from SQS (foreground)
	$(WITH_STACK) bash scripts/local.sh run

bench-ingest: stack ## time the acceptance of a 10,000-row, 30,000-URL CSV on the local stack
	$(WITH_STACK) set -a && source scripts/local.env && set +a && "$$(bash scripts/bins.sh)/imgpipe-local" bench-ingest 10000 3

bench-pipeline: stack ## the load run: 2,000-image request + 7 more through 4 worker loops; prints throughput
	$(WITH_STACK) IMGPIPE_LOAD_IMAGES=2000 cargo test --locked --workspace --test faults load_run -- --nocapture

capacity: stack ## measure MongoDB ops per image (bench-hotspot), then the capacity model and monthly cost; SHORT=1 in CI
	mkdir -p .bench
	$(WITH_STACK) set -a && source scripts/local.env && set +a && \
	  RUST_LOG=warn "$$(bash scripts/bins.sh)/imgpipe-local" bench-hotspot $(if $(SHORT),300 20 16,2000 80 1$(comma)16) .bench/hotspot.json
	python3 scripts/capacity.py --hotspot .bench/hotspot.json $(if $(SHORT),--short,)

bench-codec: ## compress a 1-24 MP photo corpus with imgpipe and Pillow side by side: MP/s, bytes, SSIMULACRA2, RSS
	bash scripts/bench/codec.sh

build: ## build the functions for Lambda with sam + cargo lambda (ARCH=arm64 default; ARCH=x86_64 here)
	PATH="$(CURDIR)/.stack/deploy-venv/bin:$$PATH" sam build --parameter-overrides Architecture=$(or $(ARCH),arm64)

.PHONY: deploy check-deploy

deploy: build ## deploy to AWS with sam deploy --guided (README, "Deploy"); deploy the ARCH you built
	PATH="$(CURDIR)/.stack/deploy-venv/bin:$$PATH" sam deploy --guided --parameter-overrides Architecture=$(or $(ARCH),arm64)

check-deploy: ## offline checks: cfn-lint, sam validate --lint, sam build (x86_64), a bootstrap per function
	bash scripts/check-deploy.sh

fmt: ## format the code
	cargo fmt --all

lint: ## formatting and clippy, as CI runs them
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
