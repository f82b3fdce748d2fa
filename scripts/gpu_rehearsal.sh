#!/usr/bin/env bash
# The GPU machine's call, rehearsed on this CPU in that machine's own package set, so that whatever
# can fail there for a reason other than CUDA fails here first:
#   bash scripts/gpu_rehearsal.sh        (or: make rehearse)
#
#  1. a virtual environment of the GPU image's packages (envs/gpu-image.txt: torch 2.11.0, whose
#     PyPI build is CUDA's and runs on a CPU, transformers 5.17.0, sentence-transformers 6.0.1, ...)
#     on Python 3.12 where this machine has it; no Snakemake, no datasets, tier1 not installed;
#  2. a copy of what a device call carries (git's tracked and untracked-not-ignored files, as the
#     device tool sends them: no .venv, no egg-info), with the bundle made in it exactly as for the
#     GPU (scripts/gpu_bundle.sh), only at small sizes (SIZES below);
#  3. scripts/gpu_session.sh there, with the image's Python and tier1 on PYTHONPATH alone; one GPU
#     declared (TIER1_GPUS=1, as on a cluster's submit host), its jobs run on the CPU
#     (TIER1_REHEARSE_ON_CPU=1), and what needs CUDA skips, saying why (the GPU tests);
#  4. what the call would bring back, checked: every record of every planned job, read through its
#     record class, the summary and the archive (tier1.tools.gpu_rehearsal).
# Everything lands in $REHEARSAL_DIR (default: a folder under /tmp); exit 0 only when all passed.
#   bash scripts/gpu_rehearsal.sh --venv-only    builds step 1's environment and stops (CI builds it
#                                                while the test suite runs)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${GPU_IMAGE_VENV:-$ROOT/.venv-gpu-image}
WORK=${REHEARSAL_DIR:-${TMPDIR:-/tmp}/tier1-gpu-rehearsal}
HOST_PY=${PYTHON:-$ROOT/.venv/bin/python} # makes the bundle: Snakemake plans the jobs here
[[ $HOST_PY == /* ]] || HOST_PY=$ROOT/$HOST_PY # the bundle is made from the copy's folder
# The check's plan at sizes a 2-core CPU runs in minutes: every job and milestone of the GPU's plan
SIZES='{train_samples: 64, test_samples: 40, num_epochs: 1, batch_size: 16, max_seq_length: 64,
        eval_batch_size: 32, corpus_chunk_size: 64, batch_sweep: [16], bench_steps: 4, bench_texts: 40,
        bench_repeats: 1}'
# The call's seconds: a CPU is no GPU, and a busy 2-core machine runs the plan in 8 to 15 minutes;
# what the rehearsal proves is that every job runs, not how fast (the GPU's budget is gpu_plan's)
CALL_S=${CALL_S:-1500}
t0=$(date +%s)
elapsed() { echo "$(($(date +%s) - t0)) s"; }

echo "== 1. the GPU image's packages in $VENV"
if [[ ! -f $VENV/.installed ]] || ! cmp -s envs/gpu-image.txt "$VENV/.installed"; then
    # Python 3.12, as the image has (its numpy 2.5 needs it): $PYTHON312, python3.12 on PATH, or
    # pyenv's newest 3.12 (its shim answers only for the versions pyenv has selected)
    base=
    pyenv_root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
    for candidate in ${PYTHON312:-} python3.12 $(ls -d "$pyenv_root"/versions/3.12*/bin/python3.12 2>/dev/null | sort -V | tail -n 1); do
        if "$candidate" -c 'import sys, venv; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
            base=$candidate
            break
        fi
    done
    if [[ -z $base ]]; then
        echo "no Python 3.12 found (the GPU image's; its numpy 2.5 needs it): install one, or name it in PYTHON312" >&2
        exit 1
    fi
    echo "   $("$base" --version) from $base"
    rm -rf "$VENV"
    "$base" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -r envs/gpu-image.txt
    cp envs/gpu-image.txt "$VENV/.installed"
fi
"$VENV/bin/python" - <<'EOF'
import importlib.util, sys
import sentence_transformers, torch, transformers
print(f"   python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}, "
      f"sentence-transformers {sentence_transformers.__version__}")
present = [m for m in ("snakemake", "datasets", "tier1") if importlib.util.find_spec(m)]
if present:
    sys.exit(f"the GPU image has none of these, but this environment has: {', '.join(present)}")
EOF
echo "   after $(elapsed)"
[[ ${1:-} == --venv-only ]] && exit 0

echo "== 2. what a device call carries, in $WORK/tree, and the bundle made there"
rm -rf "$WORK"
mkdir -p "$WORK/tree" "$WORK/out"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do [[ -e $f ]] && printf '%s\0' "$f"; done |
    tar --null -T - -cf - | tar -xf - -C "$WORK/tree"
# the bundle's size check asks git what travels: the copy is a repository of its own
git -C "$WORK/tree" init -q && git -C "$WORK/tree" add -A
(cd "$WORK/tree" && PYTHON=$HOST_PY GPU_PLAN_SET=$SIZES bash scripts/gpu_bundle.sh)
echo "   after $(elapsed)"

echo "== 3. the session, as on the GPU machine"
rc=0
(cd "$WORK/tree" && env -u VIRTUAL_ENV PATH="$VENV/bin:$PATH" PYTHON="$VENV/bin/python" OUT="$WORK/out" \
    TIER1_GPUS=1 TIER1_REHEARSE_ON_CPU=1 CALL_S=$CALL_S timeout --kill-after=10 $((CALL_S + 10)) bash scripts/gpu_session.sh) 2>&1 |
    tee "$WORK/session.log" || rc=$?
echo "   session exit $rc after $(elapsed)"

echo "== 4. what the call would bring back"
PYTHONPATH="$WORK/tree/workflow" "$VENV/bin/python" -m tier1.tools.gpu_rehearsal \
    --plan "$WORK/tree/.gpu_bundle/gpu_check.sh" --out "$WORK/out" --log "$WORK/session.log"
echo "== rehearsal passed after $(elapsed): $WORK/out"
