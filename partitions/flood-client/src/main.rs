//! Calls its server as fast as it can, forever, and reports every 10,000 replies: a client
//! flooding its server, so that a test can show that neither the flood nor the server's work
//! changes another partition's time in its windows or the start of any window.
#![no_std]
#![no_main]

use abi::ObjectKind;
use rt::println;
use rt::syscall::{call, lookup};

rt::entry!(main);

fn main() {
    let flood = lookup(ObjectKind::Channel, "flood").expect("the flood channel is granted");
    let mut reply = [0u8; 32];
    let mut answered = 0u64;
    loop {
        match call(flood, b"flood", &mut reply) {
            Ok(_) => answered += 1,
            Err(e) => println!("FAIL: call {answered}: {e:?}"),
        }
        if answered.is_multiple_of(10_000) {
            println!("{answered} calls answered");
        }
    }
}
