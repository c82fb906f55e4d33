//! Probes the virtio-blk PCI function it owns (x86_64): its windows and interrupt bits, its
//! configuration space through the kernel's mediation, its legacy I/O BAR and its modern
//! memory BAR; then every way of reaching past the grant, each of which must be refused. Last,
//! it reads the page that holds the function's MSI-X table, which the kernel never maps: the
//! partition faults there, and the health monitor stops it.
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
