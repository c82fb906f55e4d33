//! Counts as fast as it can and reports its progress every 50 ms, so a test can see it keeps
//! advancing while its neighbours misbehave.
#![no_std]
#![no_main]

use rt::println;
use rt::syscall::{partition_info, time_now_ns};

rt::entry!(main);

fn main() {
    let id = partition_info().map(|i| i.id).unwrap_or(u32::MAX);
    let mut count: u64 = 0;
    let mut next_report = time_now_ns() + 50_000_000;
    loop {
        count = core::hint::black_box(count + 1);
        if count.is_multiple_of(1024) && time_now_ns() >= next_report {
            println!("progress {count} (partition {id})");
            next_report += 50_000_000;
        }
    }
}
