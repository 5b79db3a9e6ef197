#!/usr/bin/env bash
# The speed measures of the performance work, each once, in one run on this machine: the
# payments over HTTP (as fast as tills go, and 10,000/s offered by an open-loop generator in
# its own process), the ledger at saturation (400,000 and 1,000,000 transfers) and at
# 20,000/s offered, the ledger on durable PostgreSQL, a city's day of ~1,000,000 transactions
# and the fare run. Each run's JSON goes to target/bench-now/, and one line each to standard
# output. Figures move with the machine's load: compare binaries within one run of this
# script (CITYPAY_BIN), never across days.
#
#   bash scripts/bench-now.sh        # CITYPAY_BIN (default target/release/citypay)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${CITYPAY_BIN:-target/release/citypay}")
out=target/bench-now
mkdir -p "$out"
line() {
    python3 -c '
import json, sys
name, path, keys = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
r = json.load(open(path))
flat = {}
def walk(prefix, value):
    if isinstance(value, dict):
        for k, v in value.items():
            walk(prefix + k + ".", v)
    else:
        flat[prefix[:-1]] = value
walk("", r)
if "fare_seconds" in flat and flat.get("riders"):
    flat["fare_us_per_rider_day"] = flat["fare_seconds"] * 1e6 / flat["riders"]
shown = ", ".join("%s %s" % (k, round(flat[k], 2) if isinstance(flat[k], float) else flat[k]) for k in keys if k in flat)
print("%-22s %s" % (name, shown))
' "$@"
}
measure() {
    local name=$1 keys=$2
    shift 2
    local started=$SECONDS
    "$@" >"$out/$name.json" 2>"$out/$name.log"
    line "$name" "$out/$name.json" "$keys"
    echo "                       ($((SECONDS - started)) s in all)"
}
measure payments payments_per_second,p99_us,noop_requests_per_second,payments_vs_noop,server_cpu_us_per_payment,writer_cpu_us_per_payment \
    "$bin" bench payments --json
measure payments-10k-offered payments_per_second,offered_per_second,failed,p50_us,p99_us,server_cpu_us_per_payment,writer_cpu_us_per_payment \
    "$bin" bench payments --payments 40000 --rate 10000 --json
measure ledger-400k transfers_per_second,p99_us,writer_cpu_us_per_transfer "$bin" bench ledger --transfers 400000 --json
measure ledger-1m transfers_per_second,slowest_window_per_second,p99_us,writer_cpu_us_per_transfer "$bin" bench ledger --transfers 1000000 --json
measure ledger-20k-offered transfers_per_second,p99_us "$bin" bench ledger --transfers 400000 --rate 20000 --json
measure ledger-postgres transfers_per_second,p99_us,writer_cpu_us_per_transfer \
    bash scripts/with-postgres.sh bash -c '"$0" bench ledger --db "$CITYPAY_TEST_PG" --transfers 400000 --json' "$bin"
report=$(mktemp -d)
measure day-290k timing.seconds,timing.setup_seconds,transactions,timing.transactions_per_second "$bin" simulate --residents 290000 --report "$report" --json
rm -rf "$report"
measure transit fare_us_per_rider_day,fare_seconds,riders,rush_seconds "$bin" bench transit --json
