#!/usr/bin/env bash
# Runs every test of the workspace, on a fresh Debian machine too: PostgreSQL comes from
# Debian's packages and runs as a throwaway cluster on a loopback port for the duration.
# With CI=true a missing PostgreSQL is a failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each phase's minutes, for the CI budget (a full run must stay under 35 minutes).
phase_name="set-up"; phase_started=$SECONDS
phase() {
    printf 'test.sh: %s took %d.%d min\n' "$phase_name" $(( (SECONDS - phase_started) / 60 )) $(( (SECONDS - phase_started) % 60 / 6 )) >&2
    phase_name=$1; phase_started=$SECONDS
}

if ! command -v cargo >/dev/null; then
    echo "test.sh: cargo is not installed" >&2
    exit 1
fi

# The browser tests need Chromium (Debian's package; never a downloaded browser), and the
# pages' test drives it through chromedriver; a Chinese font makes the screenshots readable.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null || ! fc-list 2>/dev/null | grep -qi wqy; then
    echo "test.sh: installing Chromium, chromedriver and a Chinese font for the browser tests (apt-get install chromium chromium-driver fonts-wqy-microhei)..." >&2
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver fonts-wqy-microhei fontconfig; } >/dev/null 2>&1; then
        echo "test.sh: could not install Chromium and chromedriver; the browser tests will be skipped (or fail under CI=true)" >&2
    fi
fi

# A city on several servers: the chaos test runs etcd and a Patroni cluster of three
# PostgreSQL nodes in network namespaces, cut apart with nftables (Debian's packages).
if ! command -v patroni >/dev/null || ! command -v etcd >/dev/null || ! command -v nft >/dev/null; then
    echo "test.sh: installing Patroni, etcd and nftables for the chaos test (apt-get install patroni etcd-server nftables)..." >&2
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq patroni etcd-server etcd-client nftables iproute2; } >/dev/null 2>&1; then
        echo "test.sh: could not install Patroni and etcd; the chaos test will be skipped (or fail under CI=true)" >&2
    fi
fi

# The OpenAPI test generates a Python client with openapi-python-client (PyPI), installed
# into a virtual environment of the build folder; python3-venv comes from Debian when missing.
venv=target/openapi-client-venv
if [ ! -x "$venv/bin/openapi-python-client" ]; then
    echo "test.sh: installing openapi-python-client into $venv..." >&2
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
        rm -rf "$venv"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; } >/dev/null 2>&1 || true
        python3 -m venv "$venv" >/dev/null 2>&1 || echo "test.sh: could not make a Python virtual environment" >&2
    fi
    "$venv/bin/pip" install -q openapi-python-client==0.29.1 >/dev/null 2>&1 \
        || echo "test.sh: could not install openapi-python-client; its test will be skipped (or fail under CI=true)" >&2
fi
export CITYPAY_OPENAPI_CLIENT_VENV="$PWD/$venv"

# The API fuzzing test runs Schemathesis (PyPI) against the served OpenAPI document; its hooks
# sign validators' calls with Ed25519 from cryptography (PyPI). Both go into a virtual
# environment of the build folder (about 1 minute on a fresh machine).
fuzz_venv=target/api-fuzz-venv
fuzz_requirements="schemathesis==4.32.5 cryptography==50.0.2"
if [ ! -x "$fuzz_venv/bin/st" ] || [ "$(cat "$fuzz_venv/.installed" 2>/dev/null)" != "$fuzz_requirements" ]; then
    echo "test.sh: installing $fuzz_requirements into $fuzz_venv..." >&2
    rm -rf "$fuzz_venv"
    python3 -m venv "$fuzz_venv" >/dev/null 2>&1 || echo "test.sh: could not make a Python virtual environment" >&2
    # shellcheck disable=SC2086 # the requirements are words
    if "$fuzz_venv/bin/pip" install -q --disable-pip-version-check $fuzz_requirements >/dev/null 2>&1; then
        echo "$fuzz_requirements" >"$fuzz_venv/.installed"
    else
        echo "test.sh: could not install Schemathesis; the API fuzzing will be skipped (or fail under CI=true)" >&2
    fi
fi
export CITYPAY_API_FUZZ_VENV="$PWD/$fuzz_venv"

# The gateway.do test drives the merchant SDKs (python-alipay-sdk, alipay-sdk-python, npm
# alipay-sdk), installed into target/gateway-sdks; Node and python3-venv come from Debian.
bash scripts/gateway-sdks.sh \
    || echo "test.sh: could not install the gateway's SDKs; their test will be skipped (or fail under CI=true)" >&2
export CITYPAY_GATEWAY_SDKS="$PWD/target/gateway-sdks"

# Tests: fast cluster (no fsync); durability is what the crash test checks, on SQLite.
phase "the workspace's tests (build included)"
CITYPAY_PG_FAST=1 bash scripts/with-postgres.sh cargo test --workspace --no-fail-fast

# Smoke runs of the binary on both backends: the benchmark with its baseline and its audit.
phase "smoke runs of the benchmark"
cargo build -p citypay
bin=target/debug/citypay
"$bin" bench ledger --accounts 1000 --transfers 20000 --clients 512 --baseline --json >/dev/null
CITYPAY_PG_FAST=1 bash scripts/with-postgres.sh bash -c \
    "$bin bench ledger --db \"\$CITYPAY_TEST_PG\" --accounts 1000 --transfers 20000 --clients 512 --json >/dev/null"
"$bin" bench gateway --payments 100 --merchants 2 --clients 4 --signatures 20 --json >/dev/null
"$bin" bench payments --payments 200 --merchants 2 --clients 4 --rate 400 --json >target/bench-payments.json
grep -q '"failed": 0' target/bench-payments.json
grep -q '"audit_clean": true' target/bench-payments.json
"$bin" bench statement --rows 20000 --wallets 1000 --pages 20 --json >/dev/null
"$bin" bench country --residents 10 --transfers 100 --cross 0,100 --json >target/bench-country.json
grep -q '"books_clean": true' target/bench-country.json
grep -q '"clearing_mirrors": true' target/bench-country.json
# Coverage-guided fuzzing only when asked for (the workspace's tests above replay every
# target's corpus): CITYPAY_FUZZ_SECS seconds per target.
if [ -n "${CITYPAY_FUZZ_SECS:-}" ]; then
    phase "fuzzing"
    bash scripts/fuzz.sh
fi
# The README's main command: the four-city day and its dashboard.
phase "the demo"
"$bin" demo --report target/citypay-demo >/dev/null
test -s target/citypay-demo/index.html
# The README's country: two shards, money across them, a city moved, the national view.
CITYPAY_BIN="$PWD/$bin" CITYPAY_PG_FAST=1 bash scripts/with-postgres.sh bash scripts/country-demo.sh 2>target/country-demo.log \
    || { tail -20 target/country-demo.log >&2; exit 1; }
phase done
echo "test.sh: all tests passed in $((SECONDS / 60)) min"
