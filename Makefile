# Set-up and the two everyday commands. pip (not uv/poetry) so torch==2.13.0 comes from the local wheel.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
BASE_STAMP := $(VENV)/.installed-base
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test test-fast install clean

$(BASE_STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e .
	touch $(BASE_STAMP)

# test extras: pytest, playwright (drives the system Chromium), dash, kaleido, ray
$(TEST_STAMP): $(BASE_STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $(TEST_STAMP)

install: $(BASE_STAMP)

## make demo: install, then train + sweep + detect + report the quickstart run into out/quickstart
demo: $(BASE_STAMP)
	$(BIN)/devinterp run configs/quickstart.yaml
	@echo "open out/quickstart/report.html"

## make test: the whole test suite (slow real-computation tests included, as in CI)
test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q

## make test-fast: skip the tests marked slow
test-fast: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf out .pytest_cache
