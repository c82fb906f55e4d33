//! Takes interrupts from a device it owns, through the kernel, as notifications: makes the
//! device raise its interrupt, waits for the notification bit the kernel raises for it, clears
//! the condition at the device, acknowledges, and repeats. Prints the mean time from the
//! triggering write to the wake-up (under `-icount`, instructions: `cargo xtask bench`'s
//! device-interrupt figure). Then it reaches past its grant, and the health monitor stops it.
//!
//! x86_64: COM2's transmitter-empty interrupt (I/O APIC, edge); past the grant is COM1's port,
//! the kernel's log. aarch64: QEMU virt's PL061 GPIO, pin 0 as a level-high output (GIC SPI);
//! past the grant is the page after its window.
#![no_std]
#![no_main]

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "x86_64")]
mod x86;

rt::entry!(main);

#[cfg(target_arch = "x86_64")]
fn main() {
    x86::main();
}

#[cfg(target_arch = "aarch64")]
fn main() {
    aarch64::main();
}
