# Set-up and the two everyday commands. pip (not uv/poetry) so torch==2.13.0 comes from the local wheel.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-fast install clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## make demo: install, then train + sweep + detect + report the quickstart run into out/quickstart
demo: $(STAMP)
	$(BIN)/devinterp run configs/quickstart.yaml
	@echo "open out/quickstart/report.html"

## make test: the whole test suite (slow real-computation tests included, as in CI)
test: $(STAMP)
	$(BIN)/python -m pytest -q

## make test-fast: skip the tests marked slow
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf out .pytest_cache
