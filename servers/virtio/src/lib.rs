//! VirtIO for Bulkhead: the driver side and the device side of the virtqueues, the transports
//! that carry them, and the device-type definitions.
//!
//! The authority is the OASIS VirtIO specification, version 1.2 (cs01); section numbers in
//! comments (`§2.7.13`) refer to it. Where 1.4 adds something it is cited as "1.4 §x".
//!
//! Layout of the crate:
//! - [`dma`]: the only module with `unsafe`: views of shared memory with bus addresses, and
//!   volatile register windows.
//! - [`transport`]: the [`transport::Transport`] trait, the initialisation sequence (§3.1), and
//!   PCI modern/legacy, MMIO v1/v2 and the inter-partition shared-memory transport.
//! - [`split`] and [`packed`]: the two virtqueue formats, each with a driver side and a device
//!   side. Both sides treat the other as untrusted.
//! - [`queue`]: what both formats share (buffers, tokens, descriptor chains seen by a device).
//! - [`devices`]: device IDs, feature bits, configuration layouts and request formats.
#![cfg_attr(not(test), no_std)]
// All `unsafe` lives in `dma`; everything else is safe code by construction.
#![deny(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod barrier;
pub mod devices;
#[allow(unsafe_code)]
pub mod dma;
pub mod features;
#[cfg(all(feature = "alloc", any(test, feature = "fuzzing")))]
pub mod fuzz;
pub mod packed;
pub mod queue;
pub mod split;
pub mod transport;

#[cfg(all(test, feature = "alloc"))]
mod tests;

/// Everything that can go wrong, on either side of a virtqueue or transport.
///
/// Errors caused by the peer (a device the driver does not trust, or a client partition the
/// I/O server does not trust) are ordinary values: no input from the other side panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// A memory access fell outside the region it was made against.
    OutOfBounds,
    /// A field access was not naturally aligned.
    Misaligned,
    /// Not enough free descriptors (or buffer ids) to submit the chain.
    QueueFull,
    /// A chain had no buffers at all.
    EmptyChain,
    /// A chain had more segments than this implementation accepts.
    ChainTooLong,
    /// A descriptor index or `next` field pointed outside the table.
    BadDescriptorIndex,
    /// A chain visited more descriptors than the table holds: it loops.
    DescriptorLoop,
    /// An indirect table was malformed (bad length, nested, or combined with NEXT).
    BadIndirectTable,
    /// A device-readable descriptor followed a device-writable one (§2.7.4.2).
    DirectionOrder,
    /// The available index moved further than the queue size.
    BadAvailIndex,
    /// A descriptor in the middle of a packed chain was not available.
    ChainNotAvailable,
    /// A used element named a buffer that is not in flight.
    BadUsedId,
    /// A used element claimed more bytes written than the buffer's writable length.
    BadUsedLength,
    /// A buffer address lies outside the area granted to the client.
    BufferOutsideGrant,
    /// A write to a device-readable buffer, or past the end of the writable buffers.
    NotWritable,
    /// A read past the end of the device-readable buffers.
    ShortRead,
    /// No VirtIO device at this location (bad magic, device ID 0, missing capability).
    NoDevice,
    /// The device or region speaks a version this crate does not.
    UnsupportedVersion,
    /// The device did not keep FEATURES_OK set (§3.1.1 step 6), or a required feature is missing.
    FeaturesRejected,
    /// The queue does not exist or is already in use.
    QueueUnavailable,
    /// The requested queue size is zero, too large, or not allowed for the format.
    BadQueueSize,
    /// The legacy interface needs a page-aligned, contiguous ring layout (§2.7.2).
    LegacyLayout,
    /// The configuration generation kept changing while the configuration was read (§2.5.1).
    ConfigUnstable,
    /// A configuration access fell outside the device's configuration space.
    ConfigOutOfRange,
    /// The device set DEVICE_NEEDS_RESET or FAILED.
    DeviceNeedsReset,
    /// The peer did not answer in time.
    Timeout,
    /// The peer broke the transport's protocol (e.g. the shared-region control block).
    Protocol,
}

/// Shorthand used throughout the crate.
pub type Result<T> = core::result::Result<T, Error>;
