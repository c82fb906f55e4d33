//! GPIO device (§5.18).

/// Feature bits (§5.18.3).
pub mod features {
    /// Interrupts.
    pub const IRQ: u32 = 0;
}

/// Configuration layout (§5.18.4): byte offsets.
pub mod config {
    /// le16: number of lines.
    pub const NGPIO: usize = 0;
    /// le32: size of the names block.
    pub const GPIO_NAMES_SIZE: usize = 4;
}

/// Queue indexes (§5.18.2).
pub mod queue {
    /// requestq.
    pub const REQUEST: u16 = 0;
    /// eventq (IRQ).
    pub const EVENT: u16 = 1;
}
