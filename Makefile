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

# A .venv whose interpreter or pip does not work (`python3 -m venv` without Debian's
# python3-venv leaves one without pip; a removed interpreter breaks one) is rebuilt
# instead of failing every later run.
ifneq ($(wildcard $(VENV)/.installed),)
ifneq ($(shell bash scripts/venv-ok.sh $(BIN)/python && echo ok),ok)
$(shell rm -f $(VENV)/.installed)
endif
endif

$(VENV)/.installed: pyproject.toml setup.py
	@if ! bash scripts/venv-ok.sh $(BIN)/python; then \
		bash scripts/python-ok.sh $(PYTHON) || exit 1; \
		rm -rf $(VENV); \
		echo "creating $(VENV) with $(PYTHON)"; \
		$(PYTHON) -m venv $(VENV) && bash scripts/venv-ok.sh $(BIN)/python || { \
			rm -rf $(VENV); \
			echo "make: '$(PYTHON) -m venv' made no working venv with pip; on Debian or" \
				"Ubuntu install python3-venv (apt-get install python3-venv) and run make again" >&2; \
			exit 1; }; \
	fi
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

protos: $(VENV)/.installed
	$(BIN)/python -m grpc_tools.protoc -I protos --python_out=. --grpc_python_out=. \
		--pyi_out=. $(PROTO_SRC)

$(PROTO_OUT): $(PROTO_SRC) $(VENV)/.installed
	$(MAKE) protos

# Both services on this machine: one session-service replica and the gateway; Ctrl-C
# (or SIGTERM to make) drains and stops both. Exits non-zero when either one stops (or
# fails to start) by itself.
run: setup
	@bash scripts/run-services.sh $(BIN) $(SESSION_HOST) $(SESSION_PORT) $(GATEWAY_HOST) \
		$(GATEWAY_PORT)

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
