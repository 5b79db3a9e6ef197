#!/usr/bin/env bash
# `citypay bench country` with one durable PostgreSQL cluster per shard, as a country runs:
# four throwaway clusters (scripts/with-postgres.sh, nested), then 1, 2 and 4 shards at 0, 5,
# 20 and 100% of transfers across shards (the last gives what one across costs in CPU against
# one local), ROUNDS times alternating (default 2), each run's JSON in target/bench-country/
# and one line each on standard output.
#
#   bash scripts/bench-country.sh        # CITYPAY_BIN (default target/release/citypay)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${CITYPAY_TEST_PG:-}" ]; then
    urls=${BENCH_COUNTRY_URLS:-}${BENCH_COUNTRY_URLS:+,}$CITYPAY_TEST_PG
else
    urls=""
fi
depth=$(printf '%s' "$urls" | tr ',' '\n' | grep -c . || true)
if [ "$depth" -lt 4 ]; then
    BENCH_COUNTRY_URLS=$urls exec bash scripts/with-postgres.sh bash "$0"
fi
IFS=, read -r -a clusters <<<"$urls"
bin=${CITYPAY_BIN:-target/release/citypay}
out=target/bench-country
mkdir -p "$out"
made() { psql -q "$1" -c "CREATE DATABASE $2" >/dev/null; echo "${1%/*}/$2"; }
for round in $(seq "${ROUNDS:-2}"); do
    for n in 1 2 4; do
        list=""
        for i in $(seq 0 $((n - 1))); do list="$list${list:+,}$(made "${clusters[$i]}" "bench_${round}_${n}_$$")"; done
        cross=0,5,20,100
        [ "$n" = 1 ] && cross=0
        "$bin" bench country --shards "$n" --db "$list" --residents 100 --transfers 3000 --clients 16 \
            --cross "$cross" --backlog 0 --json >"$out/round$round-shards$n.json" 2>/dev/null
        python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
runs = ", ".join("%d%% across: %d/s, %d us CPU" % (x["cross_percent"], x["transfers_per_second"], x["cpu_us_per_transfer"]) for x in r["runs"])
ratio = "" if r["cross_vs_local_cpu"] is None else "; across/local CPU %.2f" % r["cross_vs_local_cpu"]
print("round %s, %s shard(s): %s%s; books clean %s, clearing mirrors %s" % (sys.argv[2], r["shards"], runs, ratio, r["books_clean"], r["clearing_mirrors"]))
' "$out/round$round-shards$n.json" "$round"
    done
done
