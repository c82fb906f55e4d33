//! Memory device (§5.15).

/// Feature bits (§5.15.3).
pub mod features {
    /// `node_id` is an ACPI PXM.
    pub const ACPI_PXM: u32 = 0;
    /// Unplugged memory must not be accessed.
    pub const UNPLUGGED_INACCESSIBLE: u32 = 1;
    /// Plugged memory survives suspend (1.4).
    pub const PERSISTENT_SUSPEND: u32 = 2;
}

/// Configuration layout (§5.15.4): byte offsets.
pub mod config {
    /// le64: block size.
    pub const BLOCK_SIZE: usize = 0;
    /// le16: NUMA node.
    pub const NODE_ID: usize = 8;
    /// le64: start of the device-managed region.
    pub const ADDR: usize = 16;
    /// le64: size of the region.
    pub const REGION_SIZE: usize = 24;
    /// le64: usable part of the region.
    pub const USABLE_REGION_SIZE: usize = 32;
    /// le64: currently plugged.
    pub const PLUGGED_SIZE: usize = 40;
    /// le64: requested by the device.
    pub const REQUESTED_SIZE: usize = 48;
}

/// The guest request queue (§5.15.2).
pub const REQUEST_QUEUE: u16 = 0;
