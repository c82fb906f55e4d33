//! The console I/O server's portable logic: the console class on the I/O-server framework
//! (`ioserver`), each client's console forwarded to its own port ([`server`]), and the real
//! virtio-console device behind them ([`backend`]). The partition program (`src/main.rs`)
//! runs it on the framework's server partition. Host-tested with `cargo test -p
//! virtio-console-server`: console client driver → inter-partition transport → server →
//! multiport driver → inter-partition transport → a simulated multiport console.
//!
//! See docs/io-servers.md for the design.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

pub mod backend;
pub mod server;

#[cfg(test)]
mod tests;
