# tier1: 1-vs-N-GPU scaling benchmark for fine-tuning and evaluating a sentence-embedding model.
#   snakemake --cores 4 all                  # the default run (config/config.yaml)
#   snakemake --report results/report/report.html
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/preflight.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/tokenize.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/rank_compute.smk"
include: "workflow/rules/sweep.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/probe.smk"
include: "workflow/rules/commbench.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/check_gpus.smk"
include: "workflow/rules/bench.smk"


rule all:
    """The whole benchmark: machine preflight, data, training at every world size, evaluation, probes,
    collective bandwidths, report."""
    input:
        final_outputs(),


# The end of a run on the console: the verdicts and the table when this run wrote the report; when
# it stopped, why (a failed job: which one, the end of its log, what to do; a Ctrl-C: how to resume).
onstart:
    stop_jobs_on_signals()
    cluster_onstart()


onsuccess:
    if CLUSTER:
        CLUSTER["heartbeat"].finish()  # the jobs' last lines, before the summary; the run's notes removed
    if os.path.exists(REPORT_MD) and os.path.getmtime(REPORT_MD) >= RUN_STARTED:
        print(console.run_summary(Path(REPORT_MD), Path(REPORT_HTML)), file=sys.stderr)


onerror:
    print(console.end_of_failed_run(log, RERUN, STOPPED_BY, cluster_jobs()), file=sys.stderr)
