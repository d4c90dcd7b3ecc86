#!/usr/bin/env bash
# The README's set-up figures, measured as a new user meets them: a clean clone of COMMIT
# (default HEAD) in a fresh virtual environment, then each of the README's two commands, timed.
#
#   bash rl/bench/setup_times.sh [COMMIT] [WORKDIR]        # e.g. HEAD /tmp/setup_times
#
# 1. `pip install -e . && accelerate launch rl/train_grpo.py` (pip's download cache as it is);
# 2. in a second fresh venv and clone, `pip install -e ".[test]" && pytest -q` with
#    PIP_NO_CACHE_DIR=1. Figures go to WORKDIR/times.txt, logs beside them. Nothing else should
#    run on the machine meanwhile: the figures are wall-clock seconds.
set -uo pipefail
REPO=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
COMMIT=$(git -C "$REPO" rev-parse "${1:-HEAD}"); WORK=${2:-/tmp/setup_times}
rm -rf "$WORK"; mkdir -p "$WORK"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
timed() {  # name, then the command; appends "name seconds rc" to times.txt
    local name=$1; shift; local s; s=$(date +%s)
    "$@"; local rc=$?
    echo "$name $(( $(date +%s) - s )) s, rc $rc" | tee -a "$WORK/times.txt"
}
fresh() {  # a clean clone of COMMIT in $WORK/$1 with its own venv
    git clone -q "$REPO" "$WORK/$1" && git -C "$WORK/$1" checkout -q "$COMMIT"
    python -m venv "$WORK/$1/.venv"
}
echo "commit $COMMIT" | tee "$WORK/times.txt"
fresh run && cd "$WORK/run" && source .venv/bin/activate
timed install pip install -q -e . > "$WORK/install.log" 2>&1
timed default_run accelerate launch rl/train_grpo.py > "$WORK/run.log" 2>&1
deactivate
fresh tests && cd "$WORK/tests" && source .venv/bin/activate
timed test_install env PIP_NO_CACHE_DIR=1 pip install -q -e ".[test]" > "$WORK/test_install.log" 2>&1
timed pytest pytest -q -p no:cacheprovider > "$WORK/pytest.log" 2>&1
tail -1 "$WORK/pytest.log" | tee -a "$WORK/times.txt"
