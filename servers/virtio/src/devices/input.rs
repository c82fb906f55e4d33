//! Input device (§5.8).
//!
//! No feature bits are defined.

/// Configuration layout (§5.8.4): byte offsets.
pub mod config {
    /// u8: what to query ([`super::select`]).
    pub const SELECT: usize = 0;
    /// u8: sub-selector.
    pub const SUBSEL: usize = 1;
    /// u8: size of the answer in `U`.
    pub const SIZE: usize = 2;
    /// The answer (128 bytes).
    pub const U: usize = 8;
}

/// Values of `select` (§5.8.4).
pub mod select {
    /// Unset.
    pub const UNSET: u8 = 0x00;
    /// Device name.
    pub const ID_NAME: u8 = 0x01;
    /// Serial number.
    pub const ID_SERIAL: u8 = 0x02;
    /// Device IDs.
    pub const ID_DEVIDS: u8 = 0x03;
    /// Properties bitmap.
    pub const PROP_BITS: u8 = 0x10;
    /// Event bitmap for type `subsel`.
    pub const EV_BITS: u8 = 0x11;
    /// Absolute axis info.
    pub const ABS_INFO: u8 = 0x12;
}

/// Queue indexes (§5.8.2).
pub mod queue {
    /// eventq.
    pub const EVENT: u16 = 0;
    /// statusq.
    pub const STATUS: u16 = 1;
}

/// Size of `struct virtio_input_event` (§5.8.6): le16 type, le16 code, le32 value.
pub const EVENT_SIZE: usize = 8;
