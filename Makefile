# The two commands: `make book` (execute every chapter at the book profile, build the HTML book)
# and `make test` (unit tests, each chapter executed once by nbval at the smoke profile, strict build).
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

.PHONY: env book chapters chapter test unit nbval smoke-models smoke-book browser browser-book notebooks lock clean

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
	$(BIN)/python -m reliable_saliency run $(NB) --profile $(PROFILE) $(ARGS)

chapters: notebooks
	for nb in $(SOURCES); do \
	  $(BIN)/python -m reliable_saliency run $$(basename $$nb .py) --profile $(PROFILE) --if-changed || exit 1; \
	done

book: chapters
	$(BIN)/jupyter-book build --quiet .
	@echo "book: $(CURDIR)/_build/html/index.html"

test: unit nbval smoke-book browser

unit: env
	$(BIN)/python -m pytest tests -q

# Every chapter runs once at the smoke profile: papermill injects the parameters (--prepare-only,
# nothing executed), nbval executes and validates each cell, and the nbval_capture plugin keeps
# the outputs (chapters with every cell passed and at least one figure) for the strict build.
# Claims go to $(SMOKE_DIR)/book/claims, so the book-profile files in book/ are never touched.
# The chapters' smoke models, loaded or trained (cold cache) before the chapters run, so their
# training is timed apart from the chapters' own budget of 90 s each.
SMOKE_MODELS := lenet_natural lenet_fgsm lenet_sp3_ce lenet_sp3_hessian lenet_sp3_l2 lenet_sp3_cosd lenet_sp3_l2cosd dcgan_cifar10
smoke-models: env
	$(BIN)/python -m reliable_saliency.training.prepare smoke $(SMOKE_MODELS) --budget 240

nbval: notebooks smoke-models
	rm -rf $(SMOKE_DIR) && mkdir -p $(SMOKE_DIR)/prepared $(SMOKE_DIR)/book/chapters $(SMOKE_DIR)/book/claims
	for nb in $(NOTEBOOKS); do \
	  $(BIN)/papermill --prepare-only --log-level WARNING -k python3 -p profile smoke $$nb $(SMOKE_DIR)/prepared/$$(basename $$nb) || exit 1; \
	done
	RELIABLE_SALIENCY_CLAIMS_DIR=$(CURDIR)/$(SMOKE_DIR)/book/claims $(BIN)/python -m pytest -q -p no:cacheprovider \
	  -p reliable_saliency.chapter.nbval_capture --chapters-out $(SMOKE_DIR)/book/chapters \
	  --nbval-lax --nbval-current-env $(SMOKE_DIR)/prepared/*.ipynb

# The strict book build (warnings are errors) on the chapters nbval executed at the smoke profile.
# Its table of contents lists every chapter in notebooks/ (the published _toc.yml lists only the
# chapters already executed at the book profile), so a chapter is built strictly from its first commit.
smoke-book: nbval
	cp _config.yml $(SMOKE_DIR)/ && cp -r _static $(SMOKE_DIR)/ && cp book/*.md book/*.bib $(SMOKE_DIR)/book/
	{ printf 'format: jb-book\nroot: book/intro\nchapters:\n  - file: book/verdicts\n'; \
	  for nb in $(NOTEBOOKS); do printf '  - file: book/chapters/%s\n' "$$(basename $$nb .ipynb)"; done; \
	  printf '  - file: book/costs\n  - file: book/api\n'; } > $(SMOKE_DIR)/_toc.yml
	$(BIN)/jupyter-book build --quiet -W -n --keep-going $(SMOKE_DIR)

# The built smoke site in headless Chromium (Debian's `chromium`, or $CHROMIUM): every page opened,
# fails on a broken image, a broken internal link or anchor, an error output cell, a search that
# finds no chapter; full-page screenshots under _build/screenshots/. Checks the site smoke-book left
# (run that first); `make test` runs it last.
SEARCH_TERMS ?= Ghorbani SmoothGrad
browser: env
	@test -f $(SMOKE_DIR)/_build/html/index.html || { echo "browser: no site in $(SMOKE_DIR)/_build/html; run make smoke-book first"; exit 2; }
	$(BIN)/python tests/browser/check_site.py $(SMOKE_DIR)/_build/html --screenshots _build/screenshots \
	  $(foreach term,$(SEARCH_TERMS),--search $(term))

# The same checks on the published book: a strict build of the committed book-profile chapters
# (nothing executed) into _build/html, then the browser check; screenshots in _build/screenshots/book/.
browser-book: env
	$(BIN)/jupyter-book build --quiet -W -n --keep-going .
	$(BIN)/python tests/browser/check_site.py _build/html --screenshots _build/screenshots/book \
	  $(foreach term,$(SEARCH_TERMS),--search $(term))

# Re-pin every package from the current environment.
lock: env
	{ head -2 requirements.lock; $(BIN)/python -m pip freeze --exclude-editable | grep -v '^reliable-saliency'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf _build

# What each method costs: every explainer, paper method and metric at 32 and 224 px against the bound
# of plain model passes and beside captum, Quantus, zennit and the authors' loops (benchmarks/README.md);
# about 5 minutes on the 2-core CPU, writes benchmarks/results/suite-<device>.json for the book's page.
# Extra options: make bench BENCH_ARGS="--device cuda" or BENCH_ARGS="--quick --sections gradient,rise"
.PHONY: bench
bench: env
	$(BIN)/python -m benchmarks.suite $(BENCH_ARGS)
