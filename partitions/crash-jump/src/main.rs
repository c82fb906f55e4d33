//! Jumps to an address where nothing is mapped: the instruction fetch must fault and the health
//! monitor must contain it to this partition.
#![no_std]
#![no_main]

use rt::println;

rt::entry!(main);

const UNMAPPED: usize = 0x0000_6000_0000_0000;

fn main() {
    let generation = rt::syscall::partition_info()
        .map(|i| i.generation)
        .unwrap_or(0);
    println!("generation {generation}: jumping to unmapped address {UNMAPPED:#x}");
    // SAFETY: none; the call is meant to fault on the instruction fetch, before any code runs.
    let target: extern "C" fn() = unsafe { core::mem::transmute(core::hint::black_box(UNMAPPED)) };
    target();
    println!("the jump to unmapped memory returned");
}
