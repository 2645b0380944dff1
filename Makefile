# The two commands of the README: `make book` and `make test`. Both set up .venv/ first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= default

.PHONY: setup book pdf test lint bench clean lab

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[book,dask,test]"
	touch $@

book: setup
	$(BIN)/rcnnlib book --profile $(PROFILE)

# The same book as one PDF, build/$(PROFILE)/book.pdf (headless Chromium; installed with apt-get when missing)
pdf: setup
	$(BIN)/rcnnlib book --profile $(PROFILE) --pdf

test: setup
	$(BIN)/ruff check rcnnlib tests data book
	$(BIN)/pytest -n 2 --dist loadfile --durations=12

lint: setup
	$(BIN)/ruff check rcnnlib tests data book
	$(BIN)/ruff format --check rcnnlib tests data book
	$(BIN)/mypy

# JupyterLab on the book's notebooks, with the project's kernel ("rcnnlib") registered inside .venv/.
# The executed copies of the last build are in build/$(PROFILE)/book/. LAB_ARGS=--no-browser on a server.
lab: setup
	$(BIN)/python -m ipykernel install --sys-prefix --name rcnnlib --display-name "Python (rcnnlib)" > /dev/null
	$(BIN)/jupyter lab --ServerApp.root_dir="$(CURDIR)" $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS) book

bench: setup
	$(BIN)/python -m rcnnlib.bench

clean:
	rm -rf build $(VENV)
