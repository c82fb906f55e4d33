//! 9P transport (device ID 9; defined by the virtio-9p specification, not §5).

/// Feature bits.
pub mod features {
    /// The configuration holds a mount tag.
    pub const MOUNT_TAG: u32 = 0;
}

/// Configuration layout: byte offsets.
pub mod config {
    /// le16: tag length.
    pub const TAG_LEN: usize = 0;
    /// `u8[tag_len]`: mount tag (not NUL-terminated).
    pub const TAG: usize = 2;
}

/// The only queue: requests (T-messages) readable, replies (R-messages) writable.
pub const REQUEST_QUEUE: u16 = 0;
