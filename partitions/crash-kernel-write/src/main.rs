//! Writes to the kernel's image, which is mapped supervisor-only: the write must fault and the
//! health monitor must contain it to this partition.
#![no_std]
#![no_main]

use rt::println;

rt::entry!(main);

/// The kernel's link address on x86_64 (its upper half on aarch64 is likewise supervisor-only).
const KERNEL_ADDRESS: usize = 0xffff_ffff_8000_0000;

fn main() {
    let generation = rt::syscall::partition_info()
        .map(|i| i.generation)
        .unwrap_or(0);
    println!("generation {generation}: writing to kernel memory at {KERNEL_ADDRESS:#x}");
    // SAFETY: none; this write is meant to fault. The kernel's pages are not accessible from
    // user mode, so the CPU raises a page fault before anything is written.
    unsafe { core::ptr::write_volatile(KERNEL_ADDRESS as *mut u64, 0xdead_beef) };
    println!("the write to kernel memory did not fault");
}
