//! Device-independent feature bits (§6) and the device status field (§2.1).

/// Feature bits reserved for the transport and queue mechanisms (§6 "Reserved Feature Bits").
pub mod bits {
    /// Legacy: notify even when notifications are suppressed, once the ring empties (§6.3).
    pub const NOTIFY_ON_EMPTY: u32 = 24;
    /// Legacy: no framing assumptions about descriptor layout (§2.7.4.3).
    pub const ANY_LAYOUT: u32 = 27;
    /// Indirect descriptor tables (§2.7.5.3, §2.8.7).
    pub const INDIRECT_DESC: u32 = 28;
    /// `used_event`/`avail_event` notification suppression (§2.7.7, §2.7.10, §2.8.10).
    pub const EVENT_IDX: u32 = 29;
    /// The device complies with version 1 of the specification (not legacy).
    pub const VERSION_1: u32 = 32;
    /// The device sits behind an IOMMU or other platform address translation.
    pub const ACCESS_PLATFORM: u32 = 33;
    /// Packed virtqueue layout (§2.8).
    pub const RING_PACKED: u32 = 34;
    /// Buffers are used in the order they were made available (§2.7.9, §2.8.8).
    pub const IN_ORDER: u32 = 35;
    /// Platform ordering (DMA-strength barriers) is required.
    pub const ORDER_PLATFORM: u32 = 36;
    /// Single root I/O virtualization.
    pub const SR_IOV: u32 = 37;
    /// The driver passes extra data in available buffer notifications (§2.9).
    pub const NOTIFICATION_DATA: u32 = 38;
    /// The driver uses the device-provided notification data (1.2 §2.9).
    pub const NOTIF_CONFIG_DATA: u32 = 39;
    /// Individual virtqueues can be reset (§2.6.1).
    pub const RING_RESET: u32 = 40;
}

/// A set of feature bits, as offered by a device or accepted by a driver (§2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features(pub u64);

impl Features {
    /// The set holding exactly the listed bits; bits beyond 63 are ignored.
    pub const fn from_bits(bits: &[u32]) -> Self {
        let mut value = 0u64;
        let mut i = 0;
        while i < bits.len() {
            if bits[i] < 64 {
                value |= 1 << bits[i];
            }
            i += 1;
        }
        Self(value)
    }

    /// Whether `bit` is in the set.
    pub const fn has(self, bit: u32) -> bool {
        bit < 64 && self.0 & (1 << bit) != 0
    }

    /// The set with `bit` added.
    pub const fn with(self, bit: u32) -> Self {
        if bit < 64 {
            Self(self.0 | 1 << bit)
        } else {
            self
        }
    }

    /// Bits present in both sets.
    pub const fn intersect(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// Whether every bit of `self` is also in `other`.
    pub const fn is_subset_of(self, other: Self) -> bool {
        self.0 & !other.0 == 0
    }
}

/// Bits of the device status field (§2.1).
pub mod status {
    /// The guest OS has found the device and recognised it as a VirtIO device.
    pub const ACKNOWLEDGE: u8 = 1;
    /// The guest OS knows how to drive the device.
    pub const DRIVER: u8 = 2;
    /// The driver is set up and ready to drive the device.
    pub const DRIVER_OK: u8 = 4;
    /// The driver has acknowledged the features it understands; negotiation is complete.
    pub const FEATURES_OK: u8 = 8;
    /// The device has hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u8 = 64;
    /// Something went wrong in the guest; it has given up on the device.
    pub const FAILED: u8 = 128;
}
