//! Waits for the `done` notification and reports it; then lets the system run 200 ms more
//! before it ends (the test system powers off when it has), so that what the other partitions
//! do meanwhile (a counter that keeps counting next to a caller stuck forever) is seen.
#![no_std]
#![no_main]

use abi::ObjectKind;
use rt::println;
use rt::syscall::{lookup, poll, sleep_until, time_now_ns, wait};

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
    sleep_until(time_now_ns() + 200_000_000);
}
