//! File system device (§5.11).

/// Feature bits (§5.11.3).
pub mod features {
    /// Notification queue.
    pub const NOTIFICATION: u32 = 0;
}

/// Configuration layout (§5.11.4): byte offsets.
pub mod config {
    /// `u8[36]`: file system tag, UTF-8, NUL-padded.
    pub const TAG: usize = 0;
    /// Length of the tag field.
    pub const TAG_LEN: usize = 36;
    /// le32: number of request queues.
    pub const NUM_REQUEST_QUEUES: usize = 36;
    /// le32: notification buffer size.
    pub const NOTIFY_BUF_SIZE: usize = 40;
}

/// Queue indexes (§5.11.2).
pub mod queue {
    /// hiprio.
    pub const HIPRIO: u16 = 0;
    /// notification queue (NOTIFICATION), else the first request queue.
    pub const NOTIFICATION: u16 = 1;
}
