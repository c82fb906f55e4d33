//! The console I/O server's portable logic: per-client consoles ([`server`]), the real
//! virtio-console device behind them ([`backend`]), rate limits ([`rate`]) and what it shares
//! with the entropy server about client channels ([`chan`]). The partition program
//! (`src/main.rs`) binds it to the kernel. Host-tested with `cargo test -p
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

#[cfg(test)]
#[path = "../../../partitions/runtime/src/config.rs"]
#[allow(dead_code)]
mod rt_config;
