//! Reads the shared region `board`, which it maps read-only, checking each record it sees is
//! whole; then writes to it, which must fault (and its policy stops it).
#![no_std]
#![no_main]

use abi::ObjectKind;
use rt::println;
use rt::syscall::{lookup, region_info, sleep_until, time_now_ns};

rt::entry!(main);

fn main() {
    let board = lookup(ObjectKind::SharedRegion, "board").expect("the board region is granted");
    let info = region_info(board).expect("region_info");
    println!(
        "board at {:#x}, {} bytes, writable {}",
        info.address, info.size, info.writable
    );
    let base = info.address as *const u64;
    let (mut seen, mut last) = (0u32, 0u64);
    let mut next = time_now_ns();
    while seen < 20 {
        // SAFETY: the kernel mapped `size` bytes at `address` readable for this partition.
        let sequence = unsafe { core::ptr::read_volatile(base) };
        if sequence > last {
            // The producer runs only in its own window, so a record is never half written here.
            // SAFETY: as above; 512 words lie within the region (at least 4 KiB).
            let whole =
                (1..512).all(|i| unsafe { core::ptr::read_volatile(base.add(i)) } >= sequence);
            if !whole {
                println!("FAIL: record {sequence} is torn");
            }
            last = sequence;
            seen += 1;
        }
        next += 1_000_000;
        sleep_until(next);
    }
    println!("read 20 whole records, last {last}; now writing to the read-only region");
    // SAFETY: none; the region is mapped read-only here, so this write must fault.
    unsafe { core::ptr::write_volatile(base as *mut u64, 0) };
    println!("FAIL: the write to a read-only region did not fault");
}
