# Everything a fresh machine needs: `make run` starts both services, `make test` tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROTO_SRC := $(wildcard protos/aip_grpc/*.proto)
PROTO_OUT := $(patsubst protos/%.proto,%_pb2.py,$(PROTO_SRC))

SESSION_HOST ?= 127.0.0.1
SESSION_PORT ?= 50051
GATEWAY_HOST ?= 127.0.0.1
GATEWAY_PORT ?= 8000

.PHONY: setup protos run test lint typecheck compose-test clean bench

setup: $(VENV)/.installed $(PROTO_OUT)

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

protos: $(VENV)/.installed
	$(BIN)/python -m grpc_tools.protoc -I protos --python_out=. --grpc_python_out=. \
		--pyi_out=. $(PROTO_SRC)

$(PROTO_OUT): $(PROTO_SRC) $(VENV)/.installed
	$(MAKE) protos

# Both services on this machine: one session-service replica and the gateway; Ctrl-C
# (or SIGTERM to make) drains and stops both.
run: setup
	@$(BIN)/aip-session --host $(SESSION_HOST) --port $(SESSION_PORT) & session_pid=$$!; \
	$(BIN)/aip-gateway --host $(GATEWAY_HOST) --port $(GATEWAY_PORT) \
		--session-service $(SESSION_HOST):$(SESSION_PORT) & gateway_pid=$$!; \
	trap 'kill $$gateway_pid $$session_pid 2>/dev/null' INT TERM; \
	wait $$gateway_pid; kill $$session_pid 2>/dev/null; wait $$session_pid; true

test: setup
	$(BIN)/ruff check .
	$(BIN)/mypy aip_wire aip_runtime aip_link gateway_service session_service aip_client
	$(BIN)/python -m pytest -q

# Needs docker-compose (or podman-compose under that name).
compose-test: setup
	bash scripts/compose-test.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy aip_wire aip_runtime aip_link gateway_service session_service aip_client

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) aip_grpc/*_pb2*.py aip_grpc/*_pb2*.pyi
