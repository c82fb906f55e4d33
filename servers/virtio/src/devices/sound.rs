//! Sound device (§5.14).

/// Feature bits (1.4 §5.14.3; none in 1.2).
pub mod features {
    /// Control elements (1.4).
    pub const CTLS: u32 = 0;
}

/// Configuration layout (§5.14.4): byte offsets, all le32.
pub mod config {
    /// Number of jacks.
    pub const JACKS: usize = 0;
    /// Number of PCM streams.
    pub const STREAMS: usize = 4;
    /// Number of channel maps.
    pub const CHMAPS: usize = 8;
    /// Number of control elements (CTLS, 1.4).
    pub const CONTROLS: usize = 12;
}

/// Queue indexes (§5.14.2).
pub mod queue {
    /// controlq.
    pub const CONTROL: u16 = 0;
    /// eventq.
    pub const EVENT: u16 = 1;
    /// txq.
    pub const TX: u16 = 2;
    /// rxq.
    pub const RX: u16 = 3;
}
