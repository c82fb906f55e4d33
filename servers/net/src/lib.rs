//! The network I/O server's portable logic: the switch and its MAC policy ([`switch`]), the
//! real NIC behind it ([`uplink`]) and the network device class between clients and uplink
//! ([`server`]), on the I/O-server framework (`ioserver`). The partition program
//! (`src/main.rs`) binds it to the kernel through `iokit::serve`. Everything here is host-tested
//! (`cargo test -p virtio-net-server`): client driver → inter-partition transport → server →
//! uplink driver → inter-partition transport → a simulated network.
//!
//! See docs/io-servers.md for the design.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

pub mod server;
pub mod switch;
pub mod uplink;

#[cfg(test)]
mod tests;
