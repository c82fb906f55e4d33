//! SCMI device (§5.17).
//!
//! There is no configuration space.

/// Feature bits (§5.17.3).
pub mod features {
    /// Device-to-agent (notification) channel.
    pub const P2A_CHANNELS: u32 = 0;
    /// Shared memory for statistics.
    pub const SHARED_MEMORY: u32 = 1;
}

/// Queue indexes (§5.17.2).
pub mod queue {
    /// cmdq.
    pub const COMMAND: u16 = 0;
    /// eventq (P2A_CHANNELS).
    pub const EVENT: u16 = 1;
}
