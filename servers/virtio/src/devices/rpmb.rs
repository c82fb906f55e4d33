//! RPMB device (§5.12).
//!
//! No feature bits are defined.

/// Configuration layout (§5.12.4): byte offsets.
pub mod config {
    /// u8: capacity in units of 128 KiB (0x00..=0x80).
    pub const CAPACITY: usize = 0;
    /// u8: maximum blocks per write request; 0 means no limit.
    pub const MAX_WR_CNT: usize = 1;
    /// u8: maximum blocks per read request; 0 means no limit.
    pub const MAX_RD_CNT: usize = 2;
}

/// The request queue (§5.12.2).
pub const REQUEST_QUEUE: u16 = 0;
/// Size of one RPMB frame (§5.12.6).
pub const FRAME_SIZE: usize = 512;
