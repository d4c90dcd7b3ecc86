#!/usr/bin/env bash
# Two commits side by side on this machine, in one run: a fresh venv, clean clones of OLD and
# NEW, the install of NEW (timed), the default pipeline of each (timed), NEW's test command
# (timed), and whether their metrics.json evaluations and reward summaries are identical.
#
#   bash rl/bench/side_by_side.sh OLD NEW [WORKDIR] [RECIPE]   # e.g. ccecaac HEAD /tmp/sbs
#
# RECIPE (a YAML path) is the recipe NEW runs in place of its own default: to compare the same
# recipe when the default changed between the two commits (e.g. OLD's default, adapted to the
# options NEW added). Figures go to WORKDIR/times.txt; logs and run folders stay in WORKDIR.
set -uo pipefail
OLD=$1; NEW=$2; WORK=${3:-/tmp/side_by_side}; RECIPE=${4:-}
[ -n "$RECIPE" ] && RECIPE=$(realpath "$RECIPE")
REPO=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
NEW=$(git -C "$REPO" rev-parse "$NEW"); OLD=$(git -C "$REPO" rev-parse "$OLD")
rm -rf "$WORK"; mkdir -p "$WORK/runs"; cd "$WORK"
git clone -q "$REPO" old && git -C old checkout -q "$OLD"
git clone -q "$REPO" new && git -C new checkout -q "$NEW"
python -m venv venv
export PATH="$WORK/venv/bin:$PATH" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
timed() {  # name, then the command; appends "name seconds rc" to times.txt
    local name=$1; shift; local s; s=$(date +%s)
    "$@"; local rc=$?
    echo "$name $(( $(date +%s) - s )) s, rc $rc" | tee -a "$WORK/times.txt"
}
cd "$WORK/new" && timed install pip install -q -e . > "$WORK/install.log" 2>&1
cd "$WORK/old" && timed old_default accelerate launch rl/train_grpo.py \
    --output-dir "$WORK/runs/old" > "$WORK/old.log" 2>&1
cd "$WORK/new" && timed new_default accelerate launch rl/train_grpo.py \
    ${RECIPE:+--config "$RECIPE"} --output-dir "$WORK/runs/new" > "$WORK/new.log" 2>&1
timed tests bash -c 'pip install -q -e ".[test]" && pytest -q' > "$WORK/tests.log" 2>&1
python - "$WORK" <<'PY' | tee -a "$WORK/times.txt"
import json, sys
a, b = (json.load(open(f"{sys.argv[1]}/runs/{k}/metrics.json")) for k in ("old", "new"))
print("evaluation identical:", a["evaluation"] == b["evaluation"])
print("reward summaries identical:", a["rewards"] == b["rewards"])
for k in ("old", "new"):
    print(k, {s: {m: round(v, 4) for m, v in e.items() if m in ("gIoU", "cIoU", "Acc@0.5")}
              for s, e in (a if k == "old" else b)["evaluation"].items() if isinstance(e, dict)})
print("pipeline seconds: old", round(a["seconds"]["total"]), "new", round(b["seconds"]["total"]))
PY
