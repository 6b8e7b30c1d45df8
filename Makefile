# The two commands: `make book` (execute every chapter at the book profile, build the HTML book)
# and `make test` (unit tests, notebooks validated with nbval at the smoke profile, strict build).
# Both create the environment in $(ENV_DIR) when it is missing.
SHELL := /bin/bash
PYTHON ?= python3
ENV_DIR ?= .venv
BIN := $(ENV_DIR)/bin
PROFILE ?= book
SOURCES := $(sort $(wildcard notebooks/*.py))
NOTEBOOKS := $(SOURCES:.py=.ipynb)
SMOKE_DIR := _build/smoke
# The book's own trained models (sha256-verified by the zoo), so `make book` need not retrain them.
export RELIABLE_SALIENCY_CHECKPOINTS ?= $(CURDIR)/book/checkpoints

.PHONY: env book chapters chapter test unit nbval smoke-book notebooks lock clean

# The environment holds the pinned dependencies only; the library is always imported from this
# checkout's lib/ (PYTHONPATH, inherited by papermill's and nbval's kernels), so one environment
# cached by lock file can serve several clones without running another clone's code.
export PYTHONPATH := $(CURDIR)/lib$(if $(PYTHONPATH),:$(PYTHONPATH))
# Kernels must use their inline backend: a non-interactive MPLBACKEND (Agg) would drop every figure.
unexport MPLBACKEND

env: $(ENV_DIR)/.installed
$(ENV_DIR)/.installed: requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(ENV_DIR)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	touch $@

# Paired notebooks: the py:percent file is the source; the .ipynb is regenerated from it.
notebooks: env
	$(BIN)/jupytext --quiet --sync $(SOURCES)

# Execute one notebook with papermill into book/chapters (written on success only).
# Extra parameters: make chapter NB=00_data_and_models PROFILE=smoke ARGS="-p eval_images 200"
chapter: notebooks
	@test -n "$(NB)" || { echo "usage: make chapter NB=<notebook name without extension> [PROFILE=...] [ARGS=...]"; exit 2; }
	$(BIN)/python -m reliable_saliency.chapter.run notebooks/$(NB).ipynb book/chapters --profile $(PROFILE) $(ARGS)

chapters: notebooks
	for nb in $(NOTEBOOKS); do \
	  $(BIN)/python -m reliable_saliency.chapter.run $$nb book/chapters --profile $(PROFILE) || exit 1; \
	done

book: chapters
	$(BIN)/jupyter-book build --quiet .
	@echo "book: $(CURDIR)/_build/html/index.html"

test: unit nbval smoke-book

unit: env
	$(BIN)/python -m pytest tests -q

nbval: notebooks
	$(BIN)/python -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env $(NOTEBOOKS)

# The strict book build (warnings are errors) on chapters executed at the smoke profile,
# in a copy of the book sources so the book-profile chapters in book/chapters are not touched.
smoke-book: notebooks
	rm -rf $(SMOKE_DIR) && mkdir -p $(SMOKE_DIR)/book/chapters
	cp -r _config.yml _toc.yml $(SMOKE_DIR)/ && cp book/*.md book/*.bib $(SMOKE_DIR)/book/
	for nb in $(NOTEBOOKS); do \
	  $(BIN)/python -m reliable_saliency.chapter.run $$nb $(SMOKE_DIR)/book/chapters --profile smoke || exit 1; \
	done
	$(BIN)/jupyter-book build --quiet -W -n --keep-going $(SMOKE_DIR)

# Re-pin every package from the current environment.
lock: env
	{ head -2 requirements.lock; $(BIN)/python -m pip freeze --exclude-editable | grep -v '^reliable-saliency'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf _build

# Time our explainers and metrics against captum and Quantus (see benchmarks/README.md).
# Extra options: make bench BENCH_ARGS="--device cuda --images 256 --out benchmarks/results/NAME.json"
.PHONY: bench
bench: env
	$(BIN)/python -m benchmarks.compare_peers $(BENCH_ARGS)
