# The two commands a newcomer needs: `make demo` and `make test`.
# Each builds its own virtual environment first, so both work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Python's default: each module compiled once, then read from __pycache__. Where the
# environment turns that off, every process of the suite (and every CLI run it starts)
# compiled the package and pytest rewrote every test module again, in each worker.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install test mutants demo lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# A worker per core and one more (pytest-xdist; each starts a PostgreSQL cluster of its own). The
# cut points of one app of tests/test_histories.py share its databases: one worker runs them.
test: $(STAMP)
	$(BIN)/pytest -q -n auto --dist loadgroup

# The guard-mutation suite: each guard replaced by `return True`, each world observation
# answered from the run record; the tests must notice. Minutes of subprocesses: not in `test`.
mutants: $(STAMP)
	$(BIN)/pytest -q -m mutants tests/test_guard_mutations.py

demo: $(STAMP)
	$(BIN)/python -m orchestrator.demo

lint: $(STAMP)
	$(BIN)/ruff check orchestrator tests bench
	$(BIN)/ruff format --check orchestrator tests bench
	$(BIN)/mypy orchestrator

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
