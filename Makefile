# Two commands: `make demo` and `make test`. Each builds .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch/torchvision pinned to the pair that lies on this machine's disk (a pip cap refuses newer).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
DEMO_OUT ?= demo_out

.PHONY: demo test venv clean

$(BIN)/axion-ray: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(BIN)/axion-ray

venv: $(BIN)/axion-ray

demo: venv
	$(BIN)/axion-ray demo --out $(DEMO_OUT)

# Lint first: a ruff finding fails the suite.
test: venv
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
