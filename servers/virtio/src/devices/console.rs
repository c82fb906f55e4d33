//! Console device (§5.3).

/// Feature bits (§5.3.3).
pub mod features {
    /// `cols` and `rows` are valid.
    pub const SIZE: u32 = 0;
    /// Multiple ports and the control queues.
    pub const MULTIPORT: u32 = 1;
    /// Emergency write through `emerg_wr`.
    pub const EMERG_WRITE: u32 = 2;
}

/// Configuration layout (§5.3.4): byte offsets.
pub mod config {
    /// le16: columns.
    pub const COLS: usize = 0;
    /// le16: rows.
    pub const ROWS: usize = 2;
    /// le32: maximum number of ports.
    pub const MAX_NR_PORTS: usize = 4;
    /// le32: write a character here to emit it without queues.
    pub const EMERG_WR: usize = 8;
    /// Size of the layout.
    pub const SIZE: usize = 12;
}

/// Queue indexes (§5.3.2).
pub mod queue {
    /// receiveq of port 0.
    pub const RX0: u16 = 0;
    /// transmitq of port 0.
    pub const TX0: u16 = 1;
    /// Control receiveq (MULTIPORT).
    pub const CONTROL_RX: u16 = 2;
    /// Control transmitq (MULTIPORT).
    pub const CONTROL_TX: u16 = 3;
    /// receiveq of `port` (port 0 included).
    pub const fn rx(port: u16) -> u16 {
        if port == 0 { RX0 } else { 2 + port * 2 }
    }
    /// transmitq of `port` (port 0 included).
    pub const fn tx(port: u16) -> u16 {
        if port == 0 { TX0 } else { 3 + port * 2 }
    }
}

/// Control message events (§5.3.6.2).
pub mod event {
    /// Driver ready.
    pub const DEVICE_READY: u16 = 0;
    /// A port was added.
    pub const DEVICE_ADD: u16 = 1;
    /// A port was removed.
    pub const DEVICE_REMOVE: u16 = 2;
    /// A port is ready.
    pub const PORT_READY: u16 = 3;
    /// The port is a console.
    pub const CONSOLE_PORT: u16 = 4;
    /// Console resized.
    pub const RESIZE: u16 = 5;
    /// Port opened or closed.
    pub const PORT_OPEN: u16 = 6;
    /// Port name follows.
    pub const PORT_NAME: u16 = 7;
}

/// A control message (§5.3.6.2, `struct virtio_console_control`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlMessage {
    /// Port number.
    pub id: u32,
    /// One of [`event`].
    pub event: u16,
    /// Event value.
    pub value: u16,
}

impl ControlMessage {
    /// Encoded size.
    pub const SIZE: usize = 8;

    /// Encodes the message.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut bytes = [0u8; Self::SIZE];
        bytes[0..4].copy_from_slice(&self.id.to_le_bytes());
        bytes[4..6].copy_from_slice(&self.event.to_le_bytes());
        bytes[6..8].copy_from_slice(&self.value.to_le_bytes());
        bytes
    }

    /// Decodes a message.
    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        Self {
            id: super::le32(bytes, 0).unwrap_or(0),
            event: super::le16(bytes, 4).unwrap_or(0),
            value: super::le16(bytes, 6).unwrap_or(0),
        }
    }
}

/// Resize payload after a [`event::RESIZE`] message (§5.3.6.2): `le16 rows; le16 cols`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

impl Resize {
    /// Decodes the payload.
    pub fn from_bytes(bytes: &[u8; 4]) -> Self {
        Self {
            rows: super::le16(bytes, 0).unwrap_or(0),
            cols: super::le16(bytes, 2).unwrap_or(0),
        }
    }
}
