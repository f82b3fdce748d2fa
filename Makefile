# Two commands on a fresh machine (Python >= 3.10 with pip and venv):
#   make run    set up .venv, then run the embedded default pipeline
#   make test   set up .venv, then run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= 4
PYTEST_ARGS ?=

.PHONY: run quick compare test lint setup report check-gpus pin clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: envs/requirements.txt envs/requirements-test.txt pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -r envs/requirements.txt -r envs/requirements-test.txt
	$(BIN)/python -m pip install --no-deps -e .
	touch $@

setup: $(VENV)/.installed

run: setup
	$(BIN)/snakemake --cores $(CORES) all
	@echo "Report: results/default/report/index.html (one page: verdicts, table, every plot); table only: results/default/report/performance.md"

# The quick check, in results/quick/ beside the default run (config/quick.yaml)
quick: setup
	$(BIN)/snakemake --cores $(CORES) all --configfile config/quick.yaml

# Two or more runs side by side: make compare RUNS="default quick"
RUNS ?= default quick
compare: setup
	$(BIN)/python -m tier1 compare $(RUNS)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# What CI checks before the tests: Snakemake's own lint on the tiny test config, the rules'
# formatting, and the package and tests with ruff.
lint: setup
	$(BIN)/snakemake --lint --configfile .test/config/config.yaml
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/ruff check workflow tests

report: setup
	$(BIN)/snakemake --cores $(CORES) all
	$(BIN)/snakemake --report results/default/report/report.html
	@echo "Report: results/default/report/index.html (also first under 'Benchmark report' in results/default/report/report.html)"

# The table is printed again when Snakemake has nothing to redo.
check-gpus: setup
	$(BIN)/snakemake --cores $(CORES) check_gpus
	$(BIN)/python -m tier1.stages.check_gpus --show results/default/check_gpus/summary.json

# Re-pin after changing dependencies on purpose: writes the installed set back to envs/.
pin: setup
	$(BIN)/python -m pip freeze --exclude-editable | sed 's/+cpu$$//' > envs/.frozen.txt
	@echo "review envs/.frozen.txt, then fold it into envs/requirements*.txt and envs/tier1.yaml"

# Removes one run's results (make clean RUN=quick); other runs are kept.
RUN ?= default
clean:
	rm -rf results/$(RUN) .snakemake
