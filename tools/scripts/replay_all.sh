#!/usr/bin/env bash
# Replay every MDRP day of a directory under both policies with one build, and write the table
# of docs/DISPATCH-QUALITY.md.
#
# Usage: tools/scripts/replay_all.sh MDRP_DIR OUT_DIR [SPEED] [PARALLEL] [TOOLS_BIN] [REPLAY_ARGS...]
#   MDRP_DIR: a directory of instance directories (e.g. ../shared/mdrp)
#   OUT_DIR: one sub-directory per day and policy (solution files, summary.json, service log)
#   SPEED (default 160), PARALLEL replays at once (default 2), TOOLS_BIN (default
#   target/release/geodispatch-tools); REPLAY_ARGS go to every `replay mdrp`
# Prints the markdown table (tools/scripts/replay_table.py) at the end.
set -euo pipefail
mdrp=$1 out=$2 speed=${3:-160} parallel=${4:-2} bin=${5:-target/release/geodispatch-tools}
extra=("${@:6}")
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
jobs=()
for day in "$mdrp"/*/; do
  name=$(basename "$day")
  for policy in greedy batched; do
    jobs+=("$name $policy")
  done
done
run() {
  local name=$1 policy=$2
  "$bin" replay mdrp "$mdrp/$name" --policy "$policy" --speed "$speed" \
     --out "$out/$name-$policy" "${extra[@]}" > "$out/$name-$policy.log" 2>&1 \
    && echo "done: $name $policy" >&2 || echo "FAILED: $name $policy (see $out/$name-$policy.log)" >&2
}
running=0
for job in "${jobs[@]}"; do
  run $job &
  running=$((running + 1))
  if [ "$running" -ge "$parallel" ]; then wait -n; running=$((running - 1)); fi
done
wait
python3 "$here/replay_table.py" "$out"
