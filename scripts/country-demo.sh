#!/usr/bin/env bash
# A two-shard country on this machine, from nothing, through the servers' API:
#   - a catalog and two shard databases on the PostgreSQL of $CITYPAY_TEST_PG (run it under
#     scripts/with-postgres.sh, which makes a throwaway one), one key set, Hangzhou placed on
#     shard 1 and Fuzhou on shard 2, a server each (127.0.0.1:8081 and :8082);
#   - a daughter registers in Hangzhou and her mother in Fuzhou; the daughter tops up, finds
#     her mother by mobile number (a masked name) and sends her money across the shards;
#   - the daughter pays a Fuzhou noodle shop's QR code from her Hangzhou wallet;
#   - Fuzhou is moved to shard 1 (`citypay cluster move`) and the mother sends some back
#     from her new shard;
#   - the national dashboard's numbers (`GET /v1/city-stats`, read from every shard) and the
#     country's audit are printed.
#
#   bash scripts/with-postgres.sh bash scripts/country-demo.sh [--keep]
#
# --keep leaves both servers running until Ctrl-C: the live dashboard is at
# http://127.0.0.1:8081/dashboard (operator root, password "demo password"). CITYPAY_BIN
# names the binary (default: target/debug/citypay, else `citypay` on the PATH); the ports come
# from CITYPAY_DEMO_PORT (8081: HTTP on it and the next, cluster links 1000 below).
set -euo pipefail

die() { echo "country-demo: $*" >&2; exit 1; }
say() { echo "country-demo: $*" >&2; }

[ -n "${CITYPAY_TEST_PG:-}" ] || die "run me under scripts/with-postgres.sh (CITYPAY_TEST_PG is not set)"
keep=false
[ "${1:-}" = "--keep" ] && keep=true
bin=${CITYPAY_BIN:-}
if [ -z "$bin" ]; then
    if [ -x target/debug/citypay ]; then bin=$PWD/target/debug/citypay; else bin=$(command -v citypay) || die "no citypay binary (cargo build -p citypay)"; fi
fi
port=${CITYPAY_DEMO_PORT:-8081}
dir=$(mktemp -d /tmp/citypay-country.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

# A URL of this PostgreSQL for database $1 (made here).
base=${CITYPAY_TEST_PG%/*}
db() {
    psql -q "$CITYPAY_TEST_PG" -c "CREATE DATABASE $1" >/dev/null || die "could not create database $1"
    echo "$base/$1"
}
# The field $2 (a dotted path) of the JSON $1.
field() { python3 -c 'import json,sys; v=json.loads(sys.argv[1])
for k in sys.argv[2].split("."): v=v[int(k)] if k.isdigit() else v[k]
print(v)' "$1" "$2"; }
# Fails the demo unless $1 equals $2 ($3 says what).
expect() { [ "$1" = "$2" ] || die "$3: $1, not $2"; }
# call METHOD PORT PATH [AUTH] [KEY] [BODY]: the JSON answer; fails on an HTTP error.
call() {
    local args=(-sS --fail-with-body -X "$1" "http://127.0.0.1:$2$3" -H 'content-type: application/json')
    [ -n "${4:-}" ] && args+=(-H "authorization: $4")
    [ -n "${5:-}" ] && args+=(-H "idempotency-key: $5")
    [ -n "${6:-}" ] && args+=(-d "$6")
    curl "${args[@]}" || die "$1 $3 failed"
}

suffix=$$
catalog=$(db "demo_catalog_$suffix")
shard1=$(db "demo_shard1_$suffix")
shard2=$(db "demo_shard2_$suffix")
mkdir -p "$dir/one" "$dir/two"
"$bin" keys new "$dir/one/keys" >/dev/null
cp "$dir/one/keys" "$dir/two/keys"
"$bin" country add-shard --catalog "$catalog" --shard 1 --db "$shard1" >&2
"$bin" country add-shard --catalog "$catalog" --shard 2 --db "$shard2" >&2
"$bin" country place-city --catalog "$catalog" --city 330100 --shard 1 >&2
"$bin" country place-city --catalog "$catalog" --city 350100 --shard 2 >&2
export CITYPAY_OPERATOR_PASSWORD="demo password"
for n in 1 2; do
    shard_db=$shard1; [ $n = 2 ] && shard_db=$shard2
    sub=one; [ $n = 2 ] && sub=two
    "$bin" admin create-operator --username root --role platform --db "$shard_db" --keys "$dir/$sub/keys" >&2
    "$bin" serve --addr "127.0.0.1:$((port + n - 1))" --db "$shard_db" --keys "$dir/$sub/keys" \
        --cluster-listen "127.0.0.1:$((port + n - 1001))" --catalog "$catalog" --shard $n 2>"$dir/shard$n.log" &
    pids+=($!)
done
for n in 1 2; do
    for _ in $(seq 300); do
        curl -sf "http://127.0.0.1:$((port + n - 1))/health" | grep -q '"role":"writer"' && break
        sleep 0.1
    done
    curl -sf "http://127.0.0.1:$((port + n - 1))/health" | grep -q '"role":"writer"' || die "shard $n has no writer: $(tail -5 "$dir/shard$n.log")"
done
a=$port b=$((port + 1))
say "two shards up: Hangzhou on :$a (shard 1), Fuzhou on :$b (shard 2)"

operator() { field "$(call POST "$1" /v1/operator-sessions '' '' '{"username":"root","password":"demo password"}')" token; }
op_a="Bearer $(operator $a)" op_b="Bearer $(operator $b)"
call POST $a /v1/cities "$op_a" city-hz '{"code":330100,"name":"Hangzhou"}' >/dev/null
call POST $b /v1/cities "$op_b" city-fz '{"code":350100,"name":"Fuzhou"}' >/dev/null
call POST $a /v1/residents '' reg-d '{"city":330100,"name":"李娜","mobile":"13800138000","id_number":"11010519491231002X","password":"correct horse","account_class":"I"}' >/dev/null
call POST $a /v1/residents '' reg-m '{"city":350100,"name":"王秀英","mobile":"13700137000","id_number":"350102195501010022","password":"correct horse","account_class":"I"}' >/dev/null
sign_in() { echo "Bearer $(field "$(call POST "$1" /v1/sessions '' '' "{\"mobile\":\"$2\",\"password\":\"correct horse\"}")" token)"; }
daughter=$(sign_in $a 13800138000)
mother=$(sign_in $b 13700137000)
call POST $a /v1/sandbox-bank/card-holders "$op_a" card-d '{"card_number":"6222021234567890128","name":"李娜","id_number":"11010519491231002X"}' >/dev/null
card=$(field "$(call POST $a /v1/wallet/cards "$daughter" link-d '{"card_number":"6222021234567890128"}')" card_id)
call POST $a /v1/wallet/top-ups "$daughter" top-up-d "{\"card_id\":\"$card\",\"amount\":{\"amount\":100000,\"currency\":\"CNY\"}}" >/dev/null
say "the daughter (Hangzhou, shard 1) topped up 1,000.00 yuan"

found=$(call POST $a /v1/transfer-recipients "$daughter" '' '{"mobile":"13700137000"}')
say "13700137000 is $(field "$found" masked_name) in city $(field "$found" city)"
sent=$(call POST $a /v1/transfers "$daughter" gift-1 '{"mobile":"13700137000","amount":{"amount":50000,"currency":"CNY"},"note":"妈妈生日快乐"}')
expect "$(field "$sent" status)" completed "the transfer across shards"
say "sent 500.00 yuan across shards: completed"
expect "$(field "$(call GET $b /v1/wallet "$mother")" balance.amount)" 50000 "the mother's balance in fen"
say "the mother (Fuzhou, shard 2) holds 500.00 yuan"

shop=$(call POST $b /v1/merchants "$op_b" shop-1 '{"city":350100,"name":"鱼丸店","uscc":"91350100M00000094M","mcc":"5812","category":"restaurant","settlement_account":"6222020200112233446","notify_url":null}')
key="ApiKey $(field "$shop" api_key_id):$(field "$shop" api_key_secret)"
order=$(call POST $b /v1/trades "$key" '' '{"out_trade_no":"F1","amount":{"amount":2372,"currency":"CNY"},"subject":"鱼丸"}')
paid=$(call POST $a /v1/payments/qr "$daughter" fish-1 "{\"payload\":\"$(field "$order" qr_payload)\"}")
expect "$(field "$paid" status)" TRADE_SUCCESS "the payment at the Fuzhou shop"
say "the daughter paid the Fuzhou shop 23.72 yuan from her Hangzhou wallet"

say "moving Fuzhou to shard 1..."
"$bin" cluster move --catalog "$catalog" --keys "$dir/one/keys" --city 350100 --to 1 >&2
back=$(call POST $a /v1/transfers "$mother" back-1 '{"mobile":"13800138000","amount":{"amount":10000,"currency":"CNY"},"note":"收到了"}')
expect "$(field "$back" status)" completed "the transfer back"
expect "$(field "$(call GET $a /v1/wallet "$daughter")" balance.amount)" $((100000 - 50000 - 2372 + 10000)) "the daughter's balance in fen"
say "the mother, now on shard 1, sent 100.00 yuan back; the daughter holds 576.28 yuan"

stats=$(call GET $a /v1/city-stats "$op_a")
python3 -c 'import json,sys
for c in json.loads(sys.argv[1])["days"][0]["cities"]:
    n = sum(m["count"] for k in c["payments"].values() for m in k.values())
    print("country-demo: national view: %s: %d payments today" % (c["city"], n))' "$stats" >&2
"$bin" country show --catalog "$catalog" >&2
"$bin" country audit --catalog "$catalog" >&2
if $keep; then
    say "the dashboard: http://127.0.0.1:$a/dashboard (root / demo password); Ctrl-C stops the servers"
    wait
fi
