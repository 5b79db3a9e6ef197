#!/usr/bin/env bash
# Coverage-guided fuzzing with afl.rs on the stable toolchain: builds fuzz/ (one afl binary
# per target of crates/fuzz-targets) and fuzzes each target for CITYPAY_FUZZ_SECS seconds,
# one after another, from its committed corpus (fuzz/corpus/<target>). Prints each target's
# executions and edges, and fails when any target crashed (the crashing inputs are listed).
#
#   CITYPAY_FUZZ_SECS=600 bash scripts/fuzz.sh                 # every target, 10 minutes each
#   CITYPAY_FUZZ_SECS=60 bash scripts/fuzz.sh emvco_qr identity # some targets
#
# Installs cargo-afl (crates.io) and builds AFL++ when missing. Findings go to
# fuzz/target/afl/<target>/default/ (fuzzer_stats, queue/, crashes/).
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${CITYPAY_FUZZ_SECS:?set CITYPAY_FUZZ_SECS to the seconds each target is fuzzed}
all=(emvco_qr payment_code identity ride_code gtfs_feed gateway_key gateway_do json_bodies)
if [ $# -gt 0 ]; then targets=("$@"); else targets=("${all[@]}"); fi

if ! cargo afl --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-afl..." >&2
    cargo install --locked cargo-afl@0.18.2
fi
cargo afl config --build >/dev/null 2>&1 || true   # builds AFL++ once; says so when it is already built

# afl needs neither a performance CPU governor nor crash reports handed to the kernel here.
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1
(cd fuzz && cargo afl build --release)

stat() { sed -n "s/^$1 *: *//p" "$2"; }
mkdir -p fuzz/target/afl
crashed=()
for target in "${targets[@]}"; do
    out=fuzz/target/afl/$target
    rm -rf "$out"
    echo "fuzz.sh: fuzzing $target for $secs s..." >&2
    cargo afl fuzz -i "fuzz/corpus/$target" -o "$out" -V "$secs" -- "fuzz/target/release/$target" >"$out.log" 2>&1 \
        || { echo "fuzz.sh: afl-fuzz failed on $target; its output:" >&2; tail -30 "$out.log" >&2; exit 1; }
    stats=$out/default/fuzzer_stats
    printf '%-13s %12s executions  %6s of %6s edges (%s)  %s crashes\n' "$target" \
        "$(stat execs_done "$stats")" "$(stat edges_found "$stats")" "$(stat total_edges "$stats")" \
        "$(stat bitmap_cvg "$stats")" "$(stat saved_crashes "$stats")"
    for crash in "$out"/default/crashes/id*; do
        [ -e "$crash" ] && crashed+=("$crash")
    done
done

if [ ${#crashed[@]} -gt 0 ]; then
    echo "fuzz.sh: crashes found (replay one with: fuzz/target/release/<target> < FILE):" >&2
    printf '  %s\n' "${crashed[@]}" >&2
    exit 1
fi
echo "fuzz.sh: no crashes"
