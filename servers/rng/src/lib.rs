//! The entropy I/O server's portable logic: the real virtio-rng device as a pool of random
//! bytes ([`source`]) and the engine that shares it among clients at their rates ([`server`]).
//! The partition program (`src/main.rs`) binds it to the kernel. Host-tested with `cargo test
//! -p virtio-rng-server`: entropy client driver → inter-partition transport → server →
//! virtio-rng driver → inter-partition transport → a simulated entropy device.
//!
//! See docs/io-servers.md for the design.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

pub mod server;
pub mod source;

#[cfg(test)]
mod tests;
