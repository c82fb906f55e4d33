//! The three memory barriers the ring protocols need.
//!
//! They are SMP-strength fences: sufficient for a peer partition on another core and for
//! cache-coherent DMA devices when VIRTIO_F_ORDER_PLATFORM is not negotiated (§6, ORDER_PLATFORM: without it
//! "a weaker form of memory barriers is sufficient"). Each call site names the specification
//! section that requires it.

use core::sync::atomic::{Ordering, fence};

/// Orders earlier writes before later writes: the peer that sees the later write (an index or a
/// flags field) also sees the earlier ones (descriptors, ring entries, lengths).
#[inline]
pub fn publish() {
    fence(Ordering::Release);
}

/// Orders an earlier read (an index or flags field) before later reads of what it guards.
#[inline]
pub fn observe() {
    fence(Ordering::Acquire);
}

/// Orders earlier writes before later reads: used between publishing an index and reading the
/// peer's notification-suppression field, so that one of the two sides always sees the other.
#[inline]
pub fn full() {
    fence(Ordering::SeqCst);
}
