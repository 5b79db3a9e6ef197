fn main() {
    afl::fuzz!(|data: &[u8]| citypay_fuzz_targets::gtfs_feed(data));
}
