# Two commands do all the set-up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test typecheck lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The main job: LeNet-5 on the built-in digits, into a fresh folder under runs/ each time.
demo: $(STAMP)
	$(BIN)/cnnzoo train --model lenet5 --dataset digits --out runs/demo-$$(date +%Y%m%d-%H%M%S)

# The comparison report's test and explore's page tests (Playwright, the dev extra) open pages
# in a real headless browser: Debian's chromium (Playwright's own browser download needs the
# network).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium || \
		(apt-get update && \
		 DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium)

test: $(STAMP) $(CHROMIUM)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy
	$(BIN)/pytest -n 2 --dist loadfile --durations=15

# mypy over src/ at the strictness pyproject.toml's [tool.mypy] states; zero errors expected.
typecheck: $(STAMP)
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache .mypy_cache
