# Two commands a newcomer needs: `make demo` and `make test`.
# Each creates (or reuses) the virtual environment in .venv and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
OUT    ?= demo-out

.PHONY: install system-deps plugin demo test bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned to this machine's local CPU build (constraints.txt).
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/samplegen demo --out $(OUT)

system-deps:
	bash scripts/system-deps.sh

# The JUCE plug-in (plugin/): VST3, LV2 and Standalone, and samplegen-engine; CMake rebuilds only what changed.
# When PLUGIN_RUN is a trained run (the demo's, after `make demo`), its bundle is built into the plug-ins.
PLUGIN_RUN ?= $(OUT)/run
PLUGIN_BUNDLE := plugin/build/default-bundle
plugin: system-deps $(STAMP)
	@if [ -f $(PLUGIN_RUN)/latents.safetensors ] && [ ! $(PLUGIN_BUNDLE)/bundle.json -nt $(PLUGIN_RUN)/latents.safetensors ]; then \
	  $(VENV)/bin/samplegen export plugin $(PLUGIN_RUN) --out $(PLUGIN_BUNDLE); fi
	cmake -S plugin -B plugin/build -DCMAKE_BUILD_TYPE=Release \
	  -DSAMPLEGEN_BUNDLE=$$([ -f $(PLUGIN_BUNDLE)/bundle.json ] && echo $(CURDIR)/$(PLUGIN_BUNDLE))
	cmake --build plugin/build --parallel 2

test: $(STAMP) system-deps plugin
	$(PY) -m mypy
	$(PY) -m ruff check
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/core.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache plugin/build
