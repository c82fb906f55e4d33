//! Takes interrupts from the serial port it owns (COM2 on x86_64): enables the 16550's
//! transmitter-empty interrupt, which the UART raises at once, and waits for the notification
//! bit the kernel raises for it; reads the interrupt identification register (which clears
//! the condition), acknowledges, and repeats. Prints the mean time from the enabling write to
//! the wake-up (under `-icount`, instructions). Then it tries a port it was not granted
//! (COM1, the kernel's log): the CPU refuses, and the health monitor stops the partition.
#![no_std]
#![no_main]

#[cfg(target_arch = "x86_64")]
mod x86;

rt::entry!(main);

#[cfg(target_arch = "x86_64")]
fn main() {
    x86::main();
}

/// The device this program probes exists on x86_64 only (I/O ports, a PC's PCI function).
#[cfg(not(target_arch = "x86_64"))]
fn main() {
    rt::println!("this test partition needs x86_64");
}
