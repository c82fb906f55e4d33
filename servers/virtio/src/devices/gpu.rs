//! GPU device (§5.7).

/// Feature bits (§5.7.3).
pub mod features {
    /// 3D (virgl) mode.
    pub const VIRGL: u32 = 0;
    /// EDID support.
    pub const EDID: u32 = 1;
    /// Resource UUIDs.
    pub const RESOURCE_UUID: u32 = 2;
    /// Blob resources.
    pub const RESOURCE_BLOB: u32 = 3;
    /// Context types and synchronization timelines.
    pub const CONTEXT_INIT: u32 = 4;
}

/// Configuration layout (§5.7.4): byte offsets, all le32.
pub mod config {
    /// Pending events.
    pub const EVENTS_READ: usize = 0;
    /// Write to clear events.
    pub const EVENTS_CLEAR: usize = 4;
    /// Number of scanouts.
    pub const NUM_SCANOUTS: usize = 8;
    /// Number of capability sets.
    pub const NUM_CAPSETS: usize = 12;
}

/// Queue indexes (§5.7.2).
pub mod queue {
    /// controlq.
    pub const CONTROL: u16 = 0;
    /// cursorq.
    pub const CURSOR: u16 = 1;
}

/// Size of `struct virtio_gpu_ctrl_hdr` (§5.7.6.7): type, flags, fence_id, ctx_id, ring_idx.
pub const CTRL_HEADER_SIZE: usize = 24;
