//! Portable kernel logic of Bulkhead.
//!
//! Everything in this crate is plain Rust with no hardware access and no `unsafe`, so it is
//! tested on the host with `cargo test -p bulkhead-kcore`. The architecture layer of the kernel
//! (`kernel/src/arch/`) feeds it what the hardware reports (memory maps, device trees, counter
//! readings) and acts on its answers.
//!
//! Design principles, shared with the rest of the kernel:
//! - Nothing here may panic on input that comes from outside the kernel (a boot loader's memory
//!   map, a device tree, an ELF file, a partition): malformed input yields an error value.
//! - Bounded work: every loop is bounded by the size of its input.
//! - No allocation: callers provide storage, because the kernel allocates nothing after boot.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod bytes;
pub mod cmdline;
pub mod elf;
pub mod fdt;
pub mod health;
pub mod image;
pub mod log;
pub mod mem;
pub mod pci;
pub mod pcihost;
pub mod sched;
pub mod time;
/// The wire-record helper, shared with the ABI (see `abi::wire`).
pub use abi::wire;

/// The kernel's name, printed in the banner.
pub const NAME: &str = "Bulkhead";
/// The kernel's version, from the workspace manifest.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
