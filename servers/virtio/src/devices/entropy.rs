//! Entropy device (§5.4): no feature bits, no configuration, one queue.
//!
//! A request is one device-writable buffer; the response is the random bytes the device wrote
//! into it, `len` of the used element telling how many (§5.4.6).

/// The request queue (§5.4.2).
pub const REQUEST_QUEUE: u16 = 0;
