# The two commands of the README:  `make demo`  (set up + main job)  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch lies on this machine class's disk; installing it first keeps pip from
# pulling a multi-GB CUDA build to satisfy `torch>=2.4`.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.embedcore-installed
NATIVE_SOURCES := $(wildcard csrc/*.cpp csrc/*.h csrc/cuda/*.cu csrc/cuda/*.h csrc/cuda/*.cpp)

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py $(NATIVE_SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/embedcore demo $(ARGS)

# pytest exits 5 when it collects nothing: report it instead of failing.
test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q $(ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

lint: setup
	$(BIN)/ruff check .

bench: setup
	HF_HUB_OFFLINE=1 $(BIN)/embedcore bench $(ARGS)

clean:
	rm -rf build *.egg-info embedcore/*.so $(VENV)
