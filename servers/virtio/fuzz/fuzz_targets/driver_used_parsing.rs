//! Driver side: completions a hostile device wrote into the used ring.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    bulkhead_virtio::fuzz::driver_used_parsing(data);
});
