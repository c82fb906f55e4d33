//! A demo partition: reports its identity, then shows time passing in its windows.
#![no_std]
#![no_main]

use rt::println;
use rt::syscall::{partition_info, sleep_until, time_now_ns};

rt::entry!(main);

fn main() {
    let info = partition_info().expect("partition_info");
    println!(
        "hello from partition {} (generation {})",
        info.id, info.generation
    );
    let mut next = time_now_ns();
    for round in 1..=3 {
        next += 20_000_000;
        sleep_until(next);
        println!("round {round} at {} us", time_now_ns() / 1000);
    }
}
