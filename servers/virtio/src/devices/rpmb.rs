//! RPMB device (§5.12).
//!
//! No feature bits are defined.

/// Configuration layout (§5.12.4): byte offsets.
pub mod config {
    /// u8: maximum frames per write.
    pub const MAX_WR_CNT: usize = 0;
    /// u8: maximum frames per read.
    pub const MAX_RD_CNT: usize = 1;
}

/// The request queue (§5.12.2).
pub const REQUEST_QUEUE: u16 = 0;
/// Size of one RPMB frame (§5.12.6).
pub const FRAME_SIZE: usize = 512;
