# The two commands of the README:  `make demo`  (set up + main job)  and  `make test`.
# Setup installs through constraints.txt: the exact releases the suite last passed on, so a fresh
# clone gets what was tested whatever has been released since. `make test-latest` tries the newest
# releases in a second environment; `make pins` writes its versions into constraints.txt.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LATEST_VENV ?= .venv-latest
CONSTRAINTS := constraints.txt
# The CPU build of torch lies on this machine class's disk; installing it first keeps pip from
# pulling a multi-GB CUDA build to satisfy `torch>=2.4`. test-latest keeps it too (the newest torch
# on the index is a CUDA build).
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.embedcore-installed
LATEST_STAMP := $(LATEST_VENV)/.embedcore-installed
NATIVE_SOURCES := $(wildcard csrc/*.cpp csrc/*.h csrc/cuda/*.cu csrc/cuda/*.h csrc/cuda/*.cpp)
PYTEST = HF_HUB_OFFLINE=1 $(1)/python -m pytest -q $(ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

.PHONY: setup demo test lint bench clean test-latest pins

setup: $(STAMP)

# Build requirements come from the constraints too (--no-build-isolation), so the native build is
# as reproducible as the runtime.
$(STAMP): pyproject.toml setup.py $(CONSTRAINTS) $(NATIVE_SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) pip
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) "$(TORCH_SPEC)" setuptools wheel pybind11
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) --no-build-isolation -e ".[dev]"
	touch $@

demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/embedcore demo $(ARGS)

# pytest exits 5 when it collects nothing: report it instead of failing.
test: setup
	$(call PYTEST,$(BIN))

lint: setup
	$(BIN)/ruff check .

bench: setup
	HF_HUB_OFFLINE=1 $(BIN)/embedcore bench $(ARGS)

# The newest release of everything but torch, which stays at the CPU build (the newest torch on the
# index is a multi-GB CUDA build): constraints.txt is not used, only $(TORCH_SPEC).
$(LATEST_STAMP): pyproject.toml setup.py $(NATIVE_SOURCES)
	test -x $(LATEST_VENV)/bin/python || $(PYTHON) -m venv $(LATEST_VENV)
	echo "$(TORCH_SPEC)" > $(LATEST_VENV)/hold-torch.txt
	$(LATEST_VENV)/bin/python -m pip install -q -c $(LATEST_VENV)/hold-torch.txt --upgrade \
		pip setuptools wheel pybind11 "$(TORCH_SPEC)"
	$(LATEST_VENV)/bin/python -m pip install -q -c $(LATEST_VENV)/hold-torch.txt --upgrade \
		--upgrade-strategy eager --no-build-isolation -e ".[dev]"
	touch $@

test-latest: $(LATEST_STAMP)
	$(LATEST_VENV)/bin/python -m pip list --format=freeze 2>/dev/null | \
		grep -iE '^(transformers|sentence-transformers|tokenizers|kernels|numpy|triton|faiss-cpu|usearch)=='
	$(call PYTEST,$(LATEST_VENV)/bin)

# After `make test-latest` passes: the versions it ran become the pins (commit them on their own).
pins: $(LATEST_STAMP)
	{ echo "# The releases the whole suite passed on (make test-latest), installed by make setup."; \
	  echo "# Regenerate with: make test-latest && make pins"; \
	  $(LATEST_VENV)/bin/python -m pip freeze --all --exclude-editable | grep -viE '^(embedcore)[=@ ]' | sort -f; \
	} > $(CONSTRAINTS)

clean:
	rm -rf build *.egg-info embedcore/*.so $(VENV) $(LATEST_VENV)
