//! The Bulkhead kernel.
//!
//! Design principles (the kernel is built to be small enough to trust):
//! 1. The kernel does time partitioning, space partitioning and IPC, and nothing else: no
//!    drivers, no file systems, no network stacks. Those live in partitions.
//! 2. Everything is static. Kernel objects come from the system description at boot; after boot
//!    the kernel allocates nothing, so it cannot run out of memory while partitions run.
//! 3. Nothing a partition or a device does can make the kernel panic: bad input is an error
//!    returned, or a fault contained in the partition that caused it.
//! 4. Hardware is reached only through `arch`; all `unsafe` lives there, each block with a
//!    `// SAFETY:` argument. A function that relies on its caller's promise (a physical
//!    address, a device's registers) is an `unsafe fn` with a `# Safety` section, and the rest
//!    of the kernel reaches it only through a checked wrapper (`UserFrames`, `DeviceMemory`),
//!    so it calls safe functions alone. Portable logic lives in `kcore`, which is tested on the
//!    host; wire formats are `#[repr(C)]` structs with compile-time layout assertions.
#![no_std]
#![no_main]
#![deny(unsafe_code)]
#![feature(rust_preserve_none_cc)]
#![cfg_attr(target_arch = "x86_64", feature(abi_x86_interrupt))]

extern crate alloc;

#[macro_use]
mod klog;
#[allow(unsafe_code)]
mod arch;
mod boot;
mod exec;
mod panic;
mod uaccess;

pub use boot::{BootInfo, kmain};
