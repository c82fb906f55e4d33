//! Writes records into the shared region `board` that its consumer maps read-only: each
//! record is a sequence number followed by 511 copies of it, so a torn or foreign write shows.
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
    let words = info.size as usize / 8;
    let base = info.address as *mut u64;
    let mut next = time_now_ns();
    for sequence in 1..=200u64 {
        for i in (1..words.min(512)).rev() {
            // SAFETY: the kernel mapped `size` bytes at `address` writable for this partition
            // (region_info said so) and nothing else in this program refers to them.
            unsafe { core::ptr::write_volatile(base.add(i), sequence) };
        }
        // SAFETY: as above; the sequence number goes last, once the record is complete.
        unsafe { core::ptr::write_volatile(base, sequence) };
        next += 2_000_000;
        sleep_until(next);
    }
    println!("wrote 200 records");
}
