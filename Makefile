# ep-server developer commands. Everything runs from .venv, which `make install`
# creates from nothing but python3 (3.11+) and the package registries.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PLUGIN_DIRS := $(patsubst %/pyproject.toml,%,$(wildcard plugins/*/pyproject.toml))
STAMP := $(VENV)/.installed
NODE_DIR := tests/node
NODE_STAMP := $(NODE_DIR)/node_modules/.package-lock.json
# The operator page's browser test (tests/http/test_page_browser.py) drives
# Debian's chromium package; never a browser that a tool downloads.
CHROMIUM := /usr/bin/chromium
# bench/http.py's load generators: Debian's wrk (HTTP/1.1) and h2load (gRPC,
# from nghttp2-client); never tools built or downloaded by the bench.
WRK := /usr/bin/wrk
H2LOAD := /usr/bin/h2load

.PHONY: install run shell test lint proto breaking bench cluster clean

install: $(STAMP) $(NODE_STAMP) $(CHROMIUM)

# Reinstall when any pyproject.toml changes. Editable installs, so code edits
# need no reinstall.
$(STAMP): pyproject.toml $(wildcard plugins/*/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' $(foreach d,$(PLUGIN_DIRS),-e $(d))
	touch $@

# The Node.js client test (tests/test_node_client.py) needs @grpc/grpc-js and
# @grpc/proto-loader, pinned in tests/node/package-lock.json.
$(NODE_STAMP): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	npm ci --prefix $(NODE_DIR) --ignore-scripts --no-audit --no-fund
	touch $@

# Debian's chromium, installed with apt-get when missing (needs root; as
# anyone else, install the package and run make again).
$(CHROMIUM):
	@if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	  echo "the browser tests need Debian's chromium package: sudo apt-get install chromium" >&2; \
	  exit 1; \
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
	  || (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null)

# The bench's load generators, installed with apt-get when missing (needs
# root; as anyone else, install the package named and run make again).
$(WRK): APT_PACKAGE := wrk
$(H2LOAD): APT_PACKAGE := nghttp2-client
$(WRK) $(H2LOAD):
	@if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	  echo "make bench needs Debian's $(APT_PACKAGE) package: sudo apt-get install $(APT_PACKAGE)" >&2; \
	  exit 1; \
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(APT_PACKAGE) >/dev/null \
	  || (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(APT_PACKAGE) >/dev/null)

run: install
	$(BIN)/ep-server serve

# A shell ($$SHELL, else sh) with the venv activated: ep, ep-server, buf and
# python on PATH. Exit it to leave.
shell: install
	@echo "ep-server venv: $(abspath $(VENV)) (exit to leave)"
	@VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(BIN)):$$PATH $${SHELL:-/bin/sh}

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(foreach d,$(PLUGIN_DIRS),MYPYPATH=$(d) $(BIN)/mypy -p $(subst -,_,$(notdir $(d))) &&) true
	$(BIN)/buf lint
	$(BIN)/buf format --diff --exit-code
	$(BIN)/python tools/genproto.py --check
	$(BIN)/python tools/genopenapi.py --check
	@$(MAKE) --no-print-directory breaking

# buf breaking against the previous commit, when there is one with protos/
# (not in a source archive without .git, nor on the first commit).
breaking: install
	@if git rev-parse --verify --quiet HEAD~1 >/dev/null 2>&1 \
	    && git cat-file -e HEAD~1:buf.yaml 2>/dev/null; then \
	  echo "buf breaking --against .git#ref=HEAD~1"; \
	  $(BIN)/buf breaking --against '.git#ref=HEAD~1'; \
	else \
	  echo "buf breaking: skipped (no previous commit with buf.yaml to compare with)"; \
	fi

test: lint
	$(BIN)/pytest

# Regenerate ep_server/pb and ep_server/http/openapi.json from protos/
# (never edit those files by hand).
proto: install
	$(BIN)/python tools/genproto.py
	$(BIN)/python tools/genopenapi.py

bench: install $(WRK) $(H2LOAD)
	$(BIN)/python -m bench
	$(BIN)/python -m bench.fanout
	$(BIN)/python -m bench.booking
	$(BIN)/python -m bench.replicated
	$(BIN)/python -m bench.http
	$(BIN)/python -m bench.cost
	$(BIN)/python -m bench.pieces

# A replicated site on this machine until Ctrl-C (tools/cluster): a throwaway
# PostgreSQL server, `ep-server migrate`, 3 replicas on that ledger and HAProxy
# in front of them. HAProxy is installed with apt-get when missing (as root).
# CLUSTER_ARGS passes options on (python -m tools.cluster --help).
cluster: install
	$(BIN)/python -m tools.cluster $(CLUSTER_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache $(NODE_DIR)/node_modules
