//! The block I/O server's portable logic: virtual disks ([`disk`]), the real disk behind them
//! ([`backend`]) and the request engine between them ([`server`]). The partition program
//! (`src/main.rs`) binds it to the kernel: device registers, DMA memory, shared regions and
//! notifications. Everything here is host-tested (`cargo test -p virtio-blk-server`): client
//! driver → inter-partition transport → server → real-disk driver → simulated disk.
//!
//! See docs/io-servers.md for the design.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

pub mod backend;
pub mod bench;
pub mod disk;
pub mod server;

#[cfg(test)]
mod tests;
