//! Waits for the `done` notification and reports it.
#![no_std]
#![no_main]

use abi::ObjectKind;
use rt::println;
use rt::syscall::{lookup, poll, wait};

rt::entry!(main);

fn main() {
    let done = lookup(ObjectKind::Notification, "done").expect("the done notification is granted");
    // The notification's bit is its index among this partition's notifications (bit 0 here).
    let mask = 1u64 << 0;
    println!(
        "poll before the notification: {:#x}",
        poll(mask).expect("poll")
    );
    let bits = wait(mask).expect("wait");
    println!("woken by notification {done}: bits {bits:#x}");
}
