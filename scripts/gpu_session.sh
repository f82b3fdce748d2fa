#!/usr/bin/env bash
# Everything one lent GPU machine is asked to do, in one call (device time is scarce):
#   1. scripts/gpu_check.sh (capped at CHECK_LIMIT_S, 260 s): the GPU tests (steps under CUDA's
#      sync debug mode, masked bf16 attention at the ladder's widths), then the stages on one GPU:
#      bf16 training at batch 128 x 256 tokens (steady and wall-average step, MFU, shapes met /
#      warmed / first met in the timed window, attention kernel), the same in fp32 (bf16's
#      speed-up), evaluation, probe, cosine;
#   2. the benchmark against sentence-transformers (tier1.bench.compare, capped at BENCH_LIMIT_S,
#      220 s) on the pairs and corpus that check prepared: one warm-up process per side, then
#      sentence-transformers' defaults and the host-overhead recipe (tiny model), 3 repeats each,
#      104 steps of 128 pairs per process (103 timed, after tier1's shape warm-up); compare.json is written
#      after each recipe, so a cut keeps what was measured;
#   3. nDCG@10 of the base model in bf16 against fp32.
# Everything lands in $OUT (or docs/gpu/ when OUT is unset). Here, first:
#   PYTHON=.venv/bin/python bash scripts/gpu_bundle.sh
# then on the device machine, carrying .gpu_bundle:  bash scripts/gpu_session.sh   (timeout 590 s)
#   bash scripts/gpu_session.sh --dry-run   prints the check's commands and the bench's, runs nothing
# BENCH_ONLY=1 skips 1 and 3 and gives the benchmark the call: its data prepared directly (stdlib
# pairs if python-source fails), then one warm-up process per side, sentence-transformers'
# defaults, the matched recipe and the host-overhead recipe, 3 repeats each, capped at 480 s.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEST=${OUT:-docs/gpu}
WORK=${GPU_CHECK_DIR:-/tmp/tier1-gpu-check}
BENCH_ONLY=${BENCH_ONLY:-0}
DRY=0
[[ ${1:-} == --dry-run ]] && DRY=1
CHECK_LIMIT_S=${CHECK_LIMIT_S:-260}
if ((BENCH_ONLY)); then
    BENCH_LIMIT_S=${BENCH_LIMIT_S:-480} REPEATS=${REPEATS:-3} RECIPES=${RECIPES:-defaults matched host_overhead}
else
    BENCH_LIMIT_S=${BENCH_LIMIT_S:-220} REPEATS=${REPEATS:-3} RECIPES=${RECIPES:-defaults host_overhead}
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
mkdir -p "$DEST"
t0=$(date +%s)
elapsed() { echo "$(($(date +%s) - t0)) s"; }

if ((DRY)); then
    echo "== 1. gpu_check (limit ${CHECK_LIMIT_S} s)"
    PYTHON=$PY bash scripts/gpu_check.sh --dry-run
    echo "== 2. bench (limit ${BENCH_LIMIT_S} s): $PY -m tier1.bench.compare --recipes $RECIPES, $REPEATS repeats"
    exit 0
fi
if ((!BENCH_ONLY)); then
    echo "== 1. gpu_check (limit ${CHECK_LIMIT_S} s)"
    TRAIN_SAMPLES=${TRAIN_SAMPLES:-13312} EPOCHS=${EPOCHS:-2} timeout --kill-after=10 "$CHECK_LIMIT_S" bash scripts/gpu_check.sh
    echo "   gpu_check exit $? after $(elapsed)"
    if [[ ! -f $DEST/gpu_check_files.tar.gz ]]; then # cut off before its summary: keep its logs
        tar -czf "$DEST/gpu_check_files.tar.gz" -C "$WORK" logs steps.tsv 2>/dev/null
    fi
fi

echo "== 2. bench: tier1 against sentence-transformers"
SITE=/tmp/bench-site
for set in pinned fallback; do
    rm -rf "$SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .gpu_bundle/bench_wheels/$set/*.whl || continue
    if PYTHONPATH=$SITE "$PY" -c 'import datasets' 2>/dev/null; then
        echo "   datasets from the $set wheels"
        break
    fi
done
# the bundle's shim names the packaged model; /tmp/site holds gpu_check's wheels, if any
export PYTHONPATH=$PWD/workflow:$SITE:/tmp/site:$PWD/.gpu_bundle/shim
# config/full.yaml's batch and sequence length; BENCH_OVERRIDES (JSON) to try this on a CPU
# stage_cfg STAGE [DATASET]: that stage's --config from these settings
stage_cfg() {
    "$PY" -c '
import json, sys
from tier1.config import Tier1Config, stage_json
values = {"gpu_counts": [1], "batch_size": 128, "max_seq_length": 256, "eval_batch_size": 512,
          "bench_steps": 104, "bench_texts": 1000, "bench_repeats": int(sys.argv[2]), "dataset": sys.argv[4],
          "train_samples": 13312, "test_samples": 1000, **(json.loads(sys.argv[3]) or {})}
print(stage_json(Tier1Config.from_dict(values), sys.argv[1]))' "$1" "$REPEATS" "${BENCH_OVERRIDES:-null}" "${2:-python-source}"
}
CFG=$(stage_cfg bench)
if ((BENCH_ONLY)); then # the pairs and texts gpu_check would have prepared (104 steps of 128 pairs)
    for dataset in python-source stdlib; do
        echo "   preparing the bench's data ($dataset) in $WORK/data"
        timeout 90 "$PY" -m tier1.stages.prepare --config "$(stage_cfg prepare "$dataset")" --train "$WORK/data/train.jsonl" \
            --corpus "$WORK/data/test/corpus.jsonl" --queries "$WORK/data/test/queries.jsonl" \
            --qrels "$WORK/data/test/qrels/test.tsv" --manifest "$WORK/data/manifest.json" 2>&1 | tail -n 3
        status=${PIPESTATUS[0]}
        echo "   prepare exit $status after $(elapsed)"
        ((status == 0)) && break
    done
fi
# shellcheck disable=SC2086 # RECIPES is a list of words
timeout --kill-after=10 "$BENCH_LIMIT_S" "$PY" -m tier1.bench.compare --config "$CFG" --recipes $RECIPES \
    --pairs "$WORK/data/train.jsonl" --corpus "$WORK/data/test/corpus.jsonl" \
    --md "$DEST/compare.md" --json "$DEST/compare.json" 2>&1 | tail -n 40
echo "   bench exit ${PIPESTATUS[0]} after $(elapsed)"
tar -czf "$DEST/bench_measurements.tar.gz" -C "$DEST" measurements 2>/dev/null && rm -rf "$DEST/measurements"
cat "$DEST/compare.md" 2>/dev/null

if ((BENCH_ONLY)); then
    echo "== done after $(elapsed)"
    exit 0
fi
echo "== 3. nDCG@10, base model, bf16 against fp32"
"$PY" - "$WORK" <<'PYEOF'
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
try:
    bf16 = json.loads((work / "eval_base/metrics.json").read_text())
    fp32 = json.loads((work / "eval_base_fp32/metrics.json").read_text())
except OSError as err:
    sys.exit(f"   missing: {err}")
a, b = bf16["metrics"]["ndcg@10"], fp32["metrics"]["ndcg@10"]
print(f"   nDCG@10 {bf16['precision']} {a:.4f}, {fp32['precision']} {b:.4f}, difference {a - b:+.4f}")
PYEOF
echo "== done after $(elapsed)"
