#!/usr/bin/env bash
# A/B of two builds on the same machine, runs interleaved (old, new, old, new …) so that both
# see the same machine: nearest-20 and candidate ranking (`bench nearby`), batch ingest
# (`bench ingest`) and dispatch (`bench dispatch`). Each run's JSON goes to OUT_DIR; a summary
# table is printed at the end.
#
# Usage: tools/scripts/ab.sh OLD_CMD NEW_CMD OUT_DIR [ROUNDS] [SIZE] [DURATION_S]
#   OLD_CMD, NEW_CMD: how to run each build's benchmarks, e.g.
#     "/path/to/old/geodispatch bench"   (builds where the benchmarks were in the service binary)
#     "target/release/geodispatch-tools bench"
#   ROUNDS (default 2), SIZE drivers for the nearby run (default 100000), DURATION_S per phase
#   (default 5).
set -euo pipefail
old=$1 new=$2 out=$3 rounds=${4:-2} size=${5:-100000} duration=${6:-5}
mkdir -p "$out"
for round in $(seq 1 "$rounds"); do
  for build in old new; do
    cmd=$old; [ "$build" = new ] && cmd=$new
    echo "ab: round $round, $build: nearby" >&2
    $cmd nearby --sizes "$size" --duration "$duration" --postgis-script none > "$out/$build-$round-nearby.json"
    echo "ab: round $round, $build: ingest" >&2
    $cmd ingest --duration "$duration" > "$out/$build-$round-ingest.json"
    echo "ab: round $round, $build: dispatch" >&2
    $cmd dispatch --duration "$duration" --concurrency 32 > "$out/$build-$round-dispatch.json"
  done
done
python3 - "$out" "$rounds" <<'PY'
import json, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def load(build, r, what):
    return json.load(open(f"{out}/{build}-{r}-{what}.json"))
print("| build, round | nearest-20 q/s | nearest-20 p99 ms | candidates q/s | candidates p99 ms | batch positions/s | dispatches/s (engine) | dispatch p99 ms |")
print("|---|---|---|---|---|---|---|---|")
for r in range(1, rounds + 1):
    for build in ("old", "new"):
        n = load(build, r, "nearby")["rows"][0]
        i = load(build, r, "ingest")["result"]
        d = load(build, r, "dispatch")["result"]["engine"]
        print(f"| {build}, {r} | {n['ours']['qps']:,.0f} | {n['ours']['p99_ms']:.2f} | "
              f"{n['candidates']['qps']:,.0f} | {n['candidates']['p99_ms']:.2f} | "
              f"{i['batch_positions_per_s']:,.0f} | {d['dispatches_per_s']:,.0f} | {d['p99_ms']:.2f} |")
PY
