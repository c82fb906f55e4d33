//! I2C adapter device (§5.16).
//!
//! There is no configuration space.

/// Feature bits (§5.16.3).
pub mod features {
    /// Zero-length requests (no buffer between header and status).
    pub const ZERO_LENGTH_REQUEST: u32 = 0;
}

/// The request queue (§5.16.2).
pub const REQUEST_QUEUE: u16 = 0;

/// Request header (§5.16.6): `le16 addr; le16 padding; le32 flags`.
pub const HEADER_SIZE: usize = 8;

/// Header flags (§5.16.6).
pub mod flags {
    /// More requests of the same transfer follow.
    pub const FAIL_NEXT: u32 = 1;
    /// Read from the target.
    pub const M_RD: u32 = 2;
}

/// Response status (§5.16.6).
pub mod status {
    /// Success.
    pub const OK: u8 = 0;
    /// Failure.
    pub const ERR: u8 = 1;
}
