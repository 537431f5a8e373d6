#!/usr/bin/env bash
# Instructions per request of two service builds under callgrind: nearest-20 and candidate
# ranking, the same requests against the same data. Instruction counts do not move with the
# machine's load, so small differences between builds show where throughput runs cannot.
#
# Usage: tools/scripts/callgrind_ab/run.sh OLD_BIN NEW_BIN OUT_DIR
#   OLD_BIN, NEW_BIN: `geodispatch` release binaries (build both with the same
#   CARGO_PROFILE_RELEASE_DEBUG=line-tables-only for readable annotations).
# Needs valgrind, redis-server, redis-cli, python3 and libfaketime (Debian: faketime): the
# service runs with its wall clock sped up ×100 so that its estimate of Redis' clock always
# calls candidates fresh, which removes a load-dependent extra round trip (the ZSCORE check of
# drivers near the staleness cut-off) from both builds alike.
#
# For each build and endpoint: N = 200 and 600 requests, twice; instructions per request =
# (Ir(600) − Ir(200)) / 400, which cancels start-up and shutdown. Prints a table; the
# callgrind files stay in OUT_DIR.
set -euo pipefail
old=$1 new=$2 out=$3
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
rport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --dir "$out" --logfile "$out/redis.log" >/dev/null
trap 'redis-cli -p "$rport" shutdown nosave >/dev/null 2>&1 || true' EXIT
faketime_lib=$(ls /usr/lib/*/faketime/libfaketime.so.1 | head -1)

settings() {
  export GEODISPATCH_REDIS_URL=redis://127.0.0.1:$rport GEODISPATCH_KEY_PREFIX=ab$1
  export GEODISPATCH_LISTEN=127.0.0.1:$port GEODISPATCH_AUTH_ENABLED=false
  export GEODISPATCH_RATE_LIMITS_ENABLED=false GEODISPATCH_HTTP_WORKERS=1
  export GEODISPATCH_DISPATCH_WORKERS=0 GEODISPATCH_SWEEP_INTERVAL_MS=3600000
  export GEODISPATCH_TIMER_INTERVAL_MS=3600000 GEODISPATCH_DRIVER_TTL_MS=604800000
  export GEODISPATCH_QUEUE_CLAIM_IDLE_MS=3600000
  unset RUST_LOG
}

wait_ready() {
  for _ in $(seq 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz" || true)" = 200 ] && return 0
    sleep 0.5
  done
  echo "service never ready" >&2; return 1
}

for build in old new; do
  bin=$old; [ $build = new ] && bin=$new
  settings $build
  # The fleet, loaded natively: 20,000 drivers, every one scored (seeded, the same for both).
  "$bin" serve > "$out/load-$build.log" 2>&1 & pid=$!
  wait_ready; python3 "$here/load.py" "$port" 20000; kill -INT $pid; wait $pid || true
  for kind in nearby cand; do
    path='/v1/drivers/nearby?lat=48.8566&lon=2.3522&limit=20&status=available'
    [ $kind = cand ] && path='/v1/candidates?lat=48.8566&lon=2.3522&limit=20'
    for rep in a b; do
      for n in 200 600; do
        FAKETIME="+0 x100" FAKETIME_DONT_FAKE_MONOTONIC=1 LD_PRELOAD=$faketime_lib \
          valgrind --tool=callgrind --callgrind-out-file="$out/cg-$build-$kind-$n$rep.out" \
          "$bin" serve > "$out/serve-$build-$kind-$n$rep.log" 2>&1 & pid=$!
        wait_ready
        python3 "$here/hit.py" "$port" $n "$path"
        kill -INT $pid; wait $pid || true
      done
    done
  done
done
python3 "$here/perreq.py" "$out"
