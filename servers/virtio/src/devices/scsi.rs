//! SCSI host device (§5.6).

/// Feature bits (§5.6.3).
pub mod features {
    /// Requests with both read and write buffers.
    pub const INOUT: u32 = 0;
    /// Hotplug events.
    pub const HOTPLUG: u32 = 1;
    /// LUN parameter change events.
    pub const CHANGE: u32 = 2;
    /// T10 protection information.
    pub const T10_PI: u32 = 3;
}

/// Configuration layout (§5.6.4): byte offsets, all le32 unless noted.
pub mod config {
    /// Number of request queues.
    pub const NUM_QUEUES: usize = 0;
    /// Maximum segments per command.
    pub const SEG_MAX: usize = 4;
    /// Maximum sectors per command.
    pub const MAX_SECTORS: usize = 8;
    /// Commands per LUN.
    pub const CMD_PER_LUN: usize = 12;
    /// Event info size.
    pub const EVENT_INFO_SIZE: usize = 16;
    /// Sense buffer size (driver writable).
    pub const SENSE_SIZE: usize = 20;
    /// CDB size (driver writable).
    pub const CDB_SIZE: usize = 24;
    /// le16: maximum channel.
    pub const MAX_CHANNEL: usize = 28;
    /// le16: maximum target.
    pub const MAX_TARGET: usize = 30;
    /// Maximum LUN.
    pub const MAX_LUN: usize = 32;
}

/// Queue indexes (§5.6.2).
pub mod queue {
    /// controlq.
    pub const CONTROL: u16 = 0;
    /// eventq.
    pub const EVENT: u16 = 1;
    /// First request queue.
    pub const REQUEST0: u16 = 2;
}
