fn main() {
    afl::fuzz!(|data: &[u8]| citypay_fuzz_targets::ride_code(data));
}
