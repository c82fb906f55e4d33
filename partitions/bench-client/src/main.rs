//! Times kernel paths from user mode. Under QEMU's `-icount shift=0` every guest instruction
//! takes exactly 1 ns of guest time, so the nanoseconds per operation printed here are guest
//! instructions per operation, independent of the host (`cargo xtask bench` runs it so).
#![no_std]
#![no_main]

use abi::ObjectKind;
use rt::println;
use rt::syscall::{call, lookup, notify, time_now_ns, wait};

rt::entry!(main);

const ROUNDS: u64 = 20_000;

/// Runs `op` ROUNDS times; returns nanoseconds (guest instructions) per run.
fn per_op(mut op: impl FnMut()) -> u64 {
    for _ in 0..100 {
        op(); // warm up: page-table walks, caches of the emulator
    }
    let start = time_now_ns();
    for _ in 0..ROUNDS {
        op();
    }
    (time_now_ns() - start) / ROUNDS
}

fn main() {
    let channel = lookup(ObjectKind::Channel, "bench").expect("bench channel");
    let ping = lookup(ObjectKind::Notification, "ping").expect("ping notification");
    let mut reply = [0u8; 64];
    let message = [0x5au8; 64];
    let null = per_op(|| {
        core::hint::black_box(time_now_ns());
    });
    println!("bench: null syscall {null}");
    let yield_self = per_op(rt::syscall::yield_now);
    println!("bench: yield {yield_self}");
    let call0 = per_op(|| {
        call(channel, &[], &mut reply).expect("call");
    });
    println!("bench: call+reply 0 bytes {call0}");
    let call64 = per_op(|| {
        call(channel, &message, &mut reply).expect("call");
    });
    println!("bench: call+reply 64 bytes {call64}");
    call(channel, b"notify", &mut reply).expect("switching the server to notifications");
    let notify_rt = per_op(|| {
        notify(ping).expect("notify");
        wait(1).expect("wait");
    });
    println!("bench: notify+wake round trip {notify_rt}");
    println!("bench: done");
}
