# Everything a fresh machine needs, from python3 and make alone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# pytest workers; CI and this machine have 2 cores
JOBS   ?= 2

.PHONY: install train summary test test-fast docs clean chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[all,dev,docs]"
	touch $(STAMP)

install: $(STAMP)

# The main job: CIFAR ResNet-20 on the embedded digits -> runs/cifar-resnet20-digits/ and a
# SavedModel under saved_models/ (>= 97% test accuracy in a few minutes on 2 CPU cores).
train: install
	$(BIN)/keras-resnet train

# Depth, parameters and multiply-adds of the ImageNet ResNets.
summary: install
	$(BIN)/keras-resnet summary

# Headless Chromium for tests/test_browser.py (Debian's package; root installs it with apt-get;
# otherwise the browser tests fail naming the install command).
chromium:
	@command -v chromium >/dev/null || { test "$$(id -u)" = 0 && \
		(apt-get install -y chromium || (apt-get update && apt-get install -y chromium)); } || \
		echo "chromium is missing: run 'apt-get install -y chromium' as root"

# Every test, slow ones included (what CI runs).
test: install chromium
	$(BIN)/python -m pytest -n $(JOBS) --durations=15 -q

# The quick subset while developing.
test-fast: install
	$(BIN)/python -m pytest -n $(JOBS) -m "not slow" -q

# The documentation site (docs/, mkdocs.yml) -> site/; warnings are errors.
docs: install
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) build site *.egg-info .pytest_cache
