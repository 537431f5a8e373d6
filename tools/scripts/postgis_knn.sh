#!/usr/bin/env bash
# postgis_knn.sh - benchmark PostGIS nearest-20 (KNN) queries on a given point set.
#
# Usage:
#   bench/postgis_knn.sh POINTS_CSV QUERIES_CSV DURATION_SECONDS CLIENTS
#
#   POINTS_CSV        lines "id,lon,lat" (no header), e.g. d0000001,2.351234,48.851234
#   QUERIES_CSV       lines "lon,lat"    (no header), the query points
#   DURATION_SECONDS  how long pgbench runs (whole seconds, > 0)
#   CLIENTS           concurrent pgbench clients (also used as the thread count, -j)
#
# Environment: PGHOST (default 127.0.0.1), PGPORT (default 5432), PGUSER (default
# postgres), PGCONNECT_TIMEOUT (default 5). The script owns the database
# "geodispatch_bench" (created when missing) and drops/recreates its tables.
#
# What it measures: the throughput and latency of one KNN query per pgbench
# transaction: "the 20 points nearest to a query point, with their distances in
# metres", on a geography(Point,4326) column with a GiST index, the query point
# drawn at random from QUERIES_CSV on every transaction (pgbench -M prepared,
# -c CLIENTS -j CLIENTS -T DURATION). The query point is looked up by number in
# the table bench_queries inside the same statement, so each transaction is one
# round trip. Latency is what pgbench's per-transaction log (--log) records
# (client side, µs, including the round trip); qps is pgbench's tps "without
# initial connection time". JIT is switched off for the benchmark sessions
# (PGOPTIONS) so a misestimated plan cannot add JIT compile time to a query.
#
# Steps: (1) load POINTS_CSV into bench_points(id text primary key,
# geog geography(Point,4326)) with a GiST index, VACUUM ANALYZE; the table is reused
# when bench_meta records the same md5 of the points file (repeated runs are fast);
# (2) load QUERIES_CSV into bench_queries(n serial primary key, geog geography);
# (3) check with EXPLAIN (custom and generic plan) that the query is an Index Scan
# on the GiST index ordered by "<->", print that plan to stderr; (4) run pgbench;
# (5) compute p50/p99 (nearest rank) from the per-transaction logs.
#
# Output: diagnostics on stderr; the LAST line on stdout is one JSON object:
#   {"engine":"postgis","points":N,"clients":C,"duration_s":D,"qps":Q,"p50_ms":..,"p99_ms":..}
# If PostgreSQL/PostGIS is unreachable or PostGIS is not available and cannot be
# installed (apt-get install postgresql-$MAJOR-postgis-3, only as root), the last
# line is {"engine":"postgis","skipped":"<reason>"} and the exit code is 0.
# Any other failure prints {"engine":"postgis","error":"<reason>"} and exits non-zero
# (2 for a usage error).

set -euo pipefail

readonly DB=geodispatch_bench
# Bump when the way bench_points is built changes, so an old table is rebuilt.
readonly LOADER_VERSION=1

export PGHOST="${PGHOST:-127.0.0.1}"
export PGPORT="${PGPORT:-5432}"
export PGUSER="${PGUSER:-postgres}"
export PGCONNECT_TIMEOUT="${PGCONNECT_TIMEOUT:-5}"
unset PGDATABASE PGSERVICE || true

log() { printf '[postgis_knn] %s\n' "$*" >&2; }

json_str() { # JSON-escape $1 (backslash, quote, control chars -> space)
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=$(printf '%s' "$s" | tr '\n\r\t' '   ')
    printf '"%s"' "$s"
}

FINAL_PRINTED=0
TMPDIR_BENCH=""

skip() { # print the skipped JSON and exit 0
    log "skipping: $1"
    printf '{"engine":"postgis","skipped":%s}\n' "$(json_str "$1")"
    FINAL_PRINTED=1
    exit 0
}

die() { # print the error JSON and exit ${2:-1}
    log "error: $1"
    printf '{"engine":"postgis","error":%s}\n' "$(json_str "$1")"
    FINAL_PRINTED=1
    exit "${2:-1}"
}

on_exit() {
    local rc=$?
    if [[ -n "$TMPDIR_BENCH" && -d "$TMPDIR_BENCH" ]]; then
        rm -rf -- "$TMPDIR_BENCH"
    fi
    if [[ $rc -ne 0 && $FINAL_PRINTED -eq 0 ]]; then
        printf '{"engine":"postgis","error":%s}\n' \
            "$(json_str "unexpected failure (exit $rc), see stderr")"
    fi
}
trap on_exit EXIT

usage() {
    sed -n '4,10p' "$0" | sed 's/^# \{0,1\}//' >&2
    die "usage: postgis_knn.sh POINTS_CSV QUERIES_CSV DURATION_SECONDS CLIENTS" 2
}

# ---------------------------------------------------------------- arguments
[[ $# -eq 4 ]] || usage
POINTS_CSV=$1
QUERIES_CSV=$2
DURATION=$3
CLIENTS=$4
[[ -r "$POINTS_CSV" && -f "$POINTS_CSV" ]] || die "points file not readable: $POINTS_CSV"
[[ -r "$QUERIES_CSV" && -f "$QUERIES_CSV" ]] || die "queries file not readable: $QUERIES_CSV"
[[ "$DURATION" =~ ^[1-9][0-9]*$ ]] || die "DURATION_SECONDS must be a positive integer: $DURATION"
[[ "$CLIENTS" =~ ^[1-9][0-9]*$ ]] || die "CLIENTS must be a positive integer: $CLIENTS"

# ---------------------------------------------------------------- tools
command -v psql >/dev/null 2>&1 || skip "psql not installed"
command -v pgbench >/dev/null 2>&1 || skip "pgbench not installed"

# psql on a database: no psqlrc, quiet (no NOTICEs), stop on the first error.
pq() { local db=$1; shift; PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 -d "$db" "$@"; }
# One value / rows unaligned, tuples only.
pqv() { local db=$1; shift; pq "$db" -At "$@"; }

TMPDIR_BENCH=$(mktemp -d "${TMPDIR:-/tmp}/postgis_knn.XXXXXX")

# ---------------------------------------------------------------- server and db
MAINT_DB=postgres
if ! err=$(pqv "$MAINT_DB" -c 'select 1' 2>&1 >/dev/null); then
    MAINT_DB=template1
    if ! err=$(pqv "$MAINT_DB" -c 'select 1' 2>&1 >/dev/null); then
        skip "cannot connect to PostgreSQL at $PGHOST:$PGPORT as $PGUSER: $(head -n1 <<<"$err")"
    fi
fi
SERVER_NUM=$(pqv "$MAINT_DB" -c 'show server_version_num')
if (( SERVER_NUM >= 100000 )); then PG_MAJOR=$((SERVER_NUM / 10000)); else PG_MAJOR=$((SERVER_NUM / 100)); fi
log "server $PGHOST:$PGPORT, PostgreSQL version_num $SERVER_NUM (major $PG_MAJOR)"

if [[ -z "$(pqv "$MAINT_DB" -c "select 1 from pg_database where datname = '$DB'")" ]]; then
    log "creating database $DB"
    pq "$MAINT_DB" -c "create database $DB" >&2 || skip "cannot create database $DB"
fi

# ---------------------------------------------------------------- PostGIS
create_postgis() { pq "$DB" -c 'create extension if not exists postgis' 2>"$TMPDIR_BENCH/ext.err" >&2; }

if ! create_postgis; then
    log "CREATE EXTENSION postgis failed: $(head -n1 "$TMPDIR_BENCH/ext.err")"
    pkg="postgresql-$PG_MAJOR-postgis-3"
    if [[ $(id -u) -ne 0 ]]; then
        skip "PostGIS not available and not root to install $pkg"
    fi
    command -v apt-get >/dev/null 2>&1 || skip "PostGIS not available and apt-get not found"
    log "installing $pkg with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends "$pkg" >&2; then
        log "apt-get install failed; running apt-get update and retrying"
        apt-get update >&2 || true
        apt-get install -y --no-install-recommends "$pkg" >&2 \
            || skip "PostGIS not available and apt-get install $pkg failed"
    fi
    create_postgis || skip "CREATE EXTENSION postgis failed after installing $pkg: $(head -n1 "$TMPDIR_BENCH/ext.err")"
fi
log "PostGIS $(pqv "$DB" -c 'select postgis_lib_version()')"

# ---------------------------------------------------------------- points
PTS_MD5=$(md5sum <"$POINTS_CSV" | cut -d' ' -f1)
WANT_KEY="v$LOADER_VERSION:$PTS_MD5"
pq "$DB" -c 'create table if not exists bench_meta(key text primary key, value text not null)' >&2
HAVE_KEY=$(pqv "$DB" -c "
    select m.value from bench_meta m
    where m.key = 'points'
      and to_regclass('bench_points') is not null
      and to_regclass('bench_points_geog_idx') is not null")

if [[ "$HAVE_KEY" == "$WANT_KEY" ]]; then
    log "bench_points already holds $POINTS_CSV (md5 $PTS_MD5): reusing it"
else
    log "loading $POINTS_CSV into bench_points (md5 $PTS_MD5)"
    t0=$SECONDS
    # One transaction: the old table and its metadata stay intact if this fails.
    # Data comes on psql's stdin (pstdin); CR of CRLF files is dropped.
    tr -d '\r' <"$POINTS_CSV" | pq "$DB" -1 -f /dev/fd/3 3<<'SQL' >&2
set client_min_messages = warning;
set maintenance_work_mem = '512MB';
delete from bench_meta where key = 'points';
drop table if exists bench_points;
drop table if exists bench_points_stage;
create unlogged table bench_points_stage(id text, lon double precision, lat double precision);
\copy bench_points_stage from pstdin with (format csv)
create table bench_points(id text primary key, geog geography(Point,4326) not null);
insert into bench_points(id, geog)
    select id, ST_SetSRID(ST_MakePoint(lon, lat), 4326)::geography from bench_points_stage;
drop table bench_points_stage;
create index bench_points_geog_idx on bench_points using gist(geog);
SQL
    pq "$DB" -c 'vacuum analyze bench_points' >&2
    pq "$DB" -c "insert into bench_meta(key, value) values ('points', '$WANT_KEY')
                 on conflict (key) do update set value = excluded.value" >&2
    log "loaded, indexed and vacuumed in $((SECONDS - t0)) s"
fi
NPOINTS=$(pqv "$DB" -c 'select count(*) from bench_points')
log "bench_points: $NPOINTS points"
(( NPOINTS > 0 )) || die "bench_points is empty"

# ---------------------------------------------------------------- queries
tr -d '\r' <"$QUERIES_CSV" | pq "$DB" -1 -f /dev/fd/3 3<<'SQL' >&2
set client_min_messages = warning;
drop table if exists bench_queries;
create temp table bench_queries_stage(lon double precision, lat double precision);
\copy bench_queries_stage from pstdin with (format csv)
create table bench_queries(n serial primary key, geog geography(Point,4326) not null);
insert into bench_queries(geog)
    select ST_SetSRID(ST_MakePoint(lon, lat), 4326)::geography from bench_queries_stage;
analyze bench_queries;
SQL
NQ=$(pqv "$DB" -c 'select count(*) from bench_queries')
log "bench_queries: $NQ query points"
(( NQ > 0 )) || die "no query points loaded from $QUERIES_CSV"

# ---------------------------------------------------------------- query form
# Candidate statements (":n" is the pgbench variable), tried in order; the first
# whose custom AND generic plans are a GiST Index Scan ordered by "<->" is used.
CANDIDATES=(
# 1. the plain join form
"SELECT id, ST_Distance(p.geog, q.geog) FROM bench_points p, (SELECT geog FROM bench_queries WHERE n = :n) q ORDER BY p.geog <-> q.geog LIMIT 20;"
# 2. LATERAL: the KNN subquery is parameterised by the single query row
"SELECT k.id, k.dist FROM (SELECT geog FROM bench_queries WHERE n = :n) q CROSS JOIN LATERAL (SELECT p.id, ST_Distance(p.geog, q.geog) AS dist FROM bench_points p ORDER BY p.geog <-> q.geog LIMIT 20) k;"
# 3. scalar subqueries (InitPlans), the classic KNN-with-a-parameter form
"SELECT p.id, ST_Distance(p.geog, (SELECT geog FROM bench_queries WHERE n = :n)) FROM bench_points p ORDER BY p.geog <-> (SELECT geog FROM bench_queries WHERE n = :n) LIMIT 20;"
)

plan_uses_knn_index() { # $1 = EXPLAIN text
    grep -q 'Index Scan using bench_points_geog_idx' <<<"$1" \
        && grep -Eq 'Order By: \(.*geog <-> ' <<<"$1"
}

# EXPLAIN a statement as pgbench -M prepared runs it: PREPARE with $1 and a
# custom (plan_cache_mode=force_custom_plan) or generic plan; extra EXPLAIN options in $3.
explain_prepared() { # $1 = statement with :n, $2 = custom|generic, $3 = options
    local stmt=${1//:n/\$1}
    pqv "$DB" <<SQL
set jit = off;
set plan_cache_mode = force_${2}_plan;
prepare knn(int) as ${stmt%;};
explain ($3) execute knn(1);
SQL
}

QUERY=""
for i in "${!CANDIDATES[@]}"; do
    cand=${CANDIDATES[$i]}
    ok=1
    for mode in custom generic; do
        plan=$(explain_prepared "$cand" "$mode" "costs off") || die "EXPLAIN failed for candidate $((i + 1))"
        if ! plan_uses_knn_index "$plan"; then
            ok=0
            log "query form $((i + 1)) does not use the GiST index for KNN ($mode plan):"
            sed 's/^/    /' <<<"$plan" >&2
            break
        fi
    done
    if (( ok )); then QUERY=$cand; log "using query form $((i + 1))"; break; fi
done
[[ -n "$QUERY" ]] || die "no query form uses the GiST index for KNN ordering"

log "plan (generic, as run by pgbench -M prepared), EXPLAIN ANALYZE for n=1:"
explain_prepared "$QUERY" generic "analyze, buffers" | sed 's/^/    /' >&2

# ---------------------------------------------------------------- pgbench
SCRIPT="$TMPDIR_BENCH/knn.sql"
printf '\\set n random(1, %d)\n%s\n' "$NQ" "$QUERY" >"$SCRIPT"
log "pgbench script:"
sed 's/^/    /' "$SCRIPT" >&2

log "running pgbench -n -T $DURATION -c $CLIENTS -j $CLIENTS -M prepared"
if ! PGOPTIONS="${PGOPTIONS:-} -c jit=off" pgbench -n -T "$DURATION" -c "$CLIENTS" -j "$CLIENTS" -M prepared \
        --log --log-prefix="$TMPDIR_BENCH/pgbench_log" -f "$SCRIPT" "$DB" \
        >"$TMPDIR_BENCH/pgbench.out" 2>"$TMPDIR_BENCH/pgbench.err"; then
    cat "$TMPDIR_BENCH/pgbench.err" "$TMPDIR_BENCH/pgbench.out" >&2
    die "pgbench failed"
fi
cat "$TMPDIR_BENCH/pgbench.err" "$TMPDIR_BENCH/pgbench.out" >&2

# tps line: "tps = 1234.567890 (without initial connection time)" (PG 14+);
# older versions print "(excluding connections establishing)".
TPS=$(awk '/^tps = / && /(without initial connection time|excluding connections establishing)/ {print $3; exit}' \
    "$TMPDIR_BENCH/pgbench.out")
[[ -n "$TPS" ]] || TPS=$(awk '/^tps = / {print $3; exit}' "$TMPDIR_BENCH/pgbench.out")
[[ -n "$TPS" ]] || die "could not find tps in pgbench output"
failed=$(awk -F': ' '/^number of failed transactions/ {split($2, a, " "); print a[1]; exit}' "$TMPDIR_BENCH/pgbench.out")
if [[ -n "$failed" && "$failed" != 0 ]]; then log "warning: $failed failed transactions"; fi

# Per-transaction log lines: client_id transaction_no time script_no time_epoch time_us ...
# where time is the latency in µs (or "failed"/"skipped", left out here).
shopt -s nullglob
logs=("$TMPDIR_BENCH"/pgbench_log.*)
shopt -u nullglob
(( ${#logs[@]} > 0 )) || die "pgbench wrote no per-transaction log"
awk '$3 ~ /^[0-9]+$/ {print $3}' "${logs[@]}" | sort -n >"$TMPDIR_BENCH/lat_us"
NLAT=$(wc -l <"$TMPDIR_BENCH/lat_us")
(( NLAT > 0 )) || die "no successful transactions in the pgbench log"
pct_ms() { # nearest-rank percentile $1 (0-100) of the sorted µs list, in ms
    awk -v p="$1" -v n="$NLAT" '
        BEGIN { r = int(p * n / 100); if (r < p * n / 100) r++; if (r < 1) r = 1 }
        NR == r { printf "%.3f", $1 / 1000; exit }' "$TMPDIR_BENCH/lat_us"
}
P50=$(pct_ms 50)
P99=$(pct_ms 99)
QPS=$(awk -v t="$TPS" 'BEGIN { printf "%.1f", t }')
log "transactions logged: $NLAT, qps $QPS, p50 ${P50} ms, p99 ${P99} ms"

printf '{"engine":"postgis","points":%d,"clients":%d,"duration_s":%d,"qps":%s,"p50_ms":%s,"p99_ms":%s}\n' \
    "$NPOINTS" "$CLIENTS" "$DURATION" "$QPS" "$P50" "$P99"
FINAL_PRINTED=1
