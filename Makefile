# Two commands on a fresh machine (Python >= 3.10 with pip and venv):
#   make run    set up .venv, then run the embedded default pipeline
#   make test   set up .venv, then run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= 4
PYTEST_ARGS ?=
RUN    ?= default
# A path of a run, as tier1.layout spells it: $(call path,RUN,NAME), NAME one of its constants.
path = $(shell PYTHONPATH=workflow $(PYTHON) -m tier1.tools.run_path $(1) $(2))

.PHONY: run quick compare test lint setup report check-gpus rehearse pin clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: envs/requirements.txt envs/requirements-test.txt pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -r envs/requirements.txt -r envs/requirements-test.txt
	$(BIN)/python -m pip install --no-deps -e .
	touch $@

setup: $(VENV)/.installed

run: setup
	$(BIN)/snakemake --cores $(CORES) all
	@echo "Report: $(call path,default,REPORT_HTML) (one page: verdicts, table, every plot); table only: $(call path,default,REPORT_MD)"

# The quick check, in its own run folder beside the default run (config/quick.yaml: run_name quick)
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
	$(BIN)/snakemake --report $(call path,default,SNAKEMAKE_REPORT)
	@echo "Report: $(call path,default,REPORT_HTML) (also first under 'Benchmark report' in $(call path,default,SNAKEMAKE_REPORT))"

# The table is printed again when Snakemake has nothing to redo.
check-gpus: setup
	$(BIN)/snakemake --cores $(CORES) check_gpus
	$(BIN)/python -m tier1.stages.check_gpus --show $(call path,default,CHECK_GPUS)

# The GPU machine's one call, rehearsed on this CPU in that machine's package set (envs/gpu-image.txt,
# in .venv-gpu-image): the bundle, the session, and what it would bring back, checked.
rehearse: setup
	PYTHON=$(BIN)/python bash scripts/gpu_rehearsal.sh

# Re-pin after changing dependencies on purpose: writes the installed set back to envs/.
pin: setup
	$(BIN)/python -m pip freeze --exclude-editable | sed 's/+cpu$$//' > envs/.frozen.txt
	@echo "review envs/.frozen.txt, then fold it into envs/requirements*.txt and envs/tier1.yaml"

# Removes one run's results (make clean RUN=quick); other runs are kept.
clean:
	rm -rf $(call path,$(RUN))
