//! The virtio-console I/O server partition (see `partition.rs` and docs/io-servers.md). On the
//! host this binary is an empty stub, so the crate builds there and its library is tested.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod partition;

#[cfg(not(target_os = "none"))]
fn main() {}
