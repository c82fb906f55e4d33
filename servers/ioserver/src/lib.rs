//! The I/O-server framework: what every VirtIO device class served to partitions shares.
//!
//! An I/O server is the VirtIO driver of a real device and the VirtIO device of its client
//! partitions. Whatever the class, serving clients is the same work: a table of clients, each
//! with the device state machine of its channel (reset, FAILED, queue enables, DRIVER_OK, a
//! broken client stopped until it resets), its queues in the ring format it negotiated, its
//! counters; a round-robin pass that gives each client a turn; used-buffer notifications where
//! asked for; and a main loop that sleeps when there is nothing to do and reports what
//! happened. This crate owns all of that. A class plugs in through one trait,
//! [`DeviceClass`]: the device the clients see, what it keeps per client, how it serves a
//! client's turn, and how its real device is polled and woken.
//!
//! Principles:
//! - A client's mistakes stop that client only: its queue is closed until it resets; every
//!   other client goes on as before.
//! - Nothing a client wrote is trusted: chains are validated by the VirtIO library before a
//!   class sees them, and copies only walk validated segments ([`chain`]).
//! - Portable: no kernel calls (the main loop reaches the kernel through [`serving::Kernel`]),
//!   no `unsafe`, no allocation; everything is tested on the host, and every class runs the
//!   same conformance suite (`conformance`, feature `conformance`).
//!
//! See docs/io-servers.md ("Adding a device class").
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod chain;
pub mod client;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod queue;
pub mod rate;
pub mod server;
pub mod serving;
#[cfg(any(test, feature = "conformance"))]
pub mod sim;

#[cfg(test)]
mod tests;

pub use client::{
    Broken, Channel, ClientState, ClientStats, Clients, MAX_CLIENTS, MAX_QUEUES, Ready,
};
pub use queue::{ClientQueue, ring_features};
pub use server::{
    AddError, DeviceClass, DeviceInterrupts, MAX_CONFIG, Progress, Server, Settings, Turn, Visit,
};
pub use serving::{Kernel, LoopSettings, Serving};
