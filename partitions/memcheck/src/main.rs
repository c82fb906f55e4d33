//! Fills a buffer with a pattern and keeps verifying it while its neighbours misbehave: a
//! kernel that let one partition's syscalls write another's memory would show here.
#![no_std]
#![no_main]

use rt::println;
use rt::syscall::time_now_ns;

rt::entry!(main);

const WORDS: usize = 4096;

fn pattern(i: usize) -> u64 {
    (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5555_aaaa_5555_aaaa
}

fn main() {
    let mut buffer = [0u64; WORDS];
    for (i, w) in buffer.iter_mut().enumerate() {
        *w = pattern(i);
    }
    let mut checks = 0u64;
    let mut next_report = time_now_ns() + 100_000_000;
    loop {
        for (i, w) in buffer.iter().enumerate() {
            let w = core::hint::black_box(*w);
            if w != pattern(i) {
                println!("CORRUPTED: word {i} is {w:#x}, expected {:#x}", pattern(i));
                rt::syscall::exit(2);
            }
        }
        checks += 1;
        if time_now_ns() >= next_report {
            println!("verified {checks} times, memory intact");
            next_report += 100_000_000;
        }
    }
}
