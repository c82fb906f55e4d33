//! I/O server side: chains popped from rings a hostile client wrote.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    bulkhead_virtio::fuzz::device_chain_parsing(data);
});
