//! Packed virtqueues (§2.8): one descriptor ring both sides write, plus two event suppression
//! structures.

mod device;
mod driver;

pub use device::PackedDeviceQueue;
pub use driver::PackedQueue;

use crate::dma::DmaRegion;
use crate::{Error, Result};

/// Descriptor flag: the buffer continues in the next descriptor (§2.8.6).
pub const DESC_F_NEXT: u16 = 1;
/// Descriptor flag: device-writable buffer (§2.8.3).
pub const DESC_F_WRITE: u16 = 2;
/// Descriptor flag: the buffer holds an indirect descriptor table (§2.8.7).
pub const DESC_F_INDIRECT: u16 = 4;
/// Descriptor flag: available, when equal to the driver's wrap counter (§2.8.1).
pub const DESC_F_AVAIL: u16 = 1 << 7;
/// Descriptor flag: used, when equal to the device's wrap counter (§2.8.1).
pub const DESC_F_USED: u16 = 1 << 15;
/// Event suppression: notify on every event (§2.8.14).
pub const EVENT_FLAGS_ENABLE: u16 = 0;
/// Event suppression: never notify (§2.8.14).
pub const EVENT_FLAGS_DISABLE: u16 = 1;
/// Event suppression: notify when the descriptor at `off_wrap` is reached; EVENT_IDX only.
pub const EVENT_FLAGS_DESC: u16 = 2;

/// Size of a descriptor: `le64 addr; le32 len; le16 id; le16 flags` (§2.8.13).
pub const DESC_SIZE: usize = 16;

/// Byte offsets of a packed queue's parts inside one region: the descriptor ring (16-byte
/// aligned), then the driver and the device event suppression structures (4 bytes each,
/// 4-byte aligned; §2.8.10.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedLayout {
    size: u16,
    ring: usize,
    driver_event: usize,
    device_event: usize,
}

impl PackedLayout {
    /// The contiguous layout for `size` descriptors.
    pub fn new(size: u16) -> Result<Self> {
        // §2.8.10.1 / §2.8: any size from 1 to 32768; it need not be a power of 2.
        if size == 0 || size > 32768 {
            return Err(Error::BadQueueSize);
        }
        let ring_len = DESC_SIZE * usize::from(size);
        Ok(Self {
            size,
            ring: 0,
            driver_event: ring_len,
            device_event: ring_len + 4,
        })
    }

    /// The layout from explicit offsets (the device side learns them from the driver).
    pub fn from_offsets(
        size: u16,
        ring: usize,
        driver_event: usize,
        device_event: usize,
    ) -> Result<Self> {
        Self::new(size)?;
        let parts = [
            (ring, DESC_SIZE * usize::from(size), 16),
            (driver_event, 4, 4),
            (device_event, 4, 4),
        ];
        for (i, &(start, len, align)) in parts.iter().enumerate() {
            let end = start.checked_add(len).ok_or(Error::OutOfBounds)?;
            if start % align != 0 {
                return Err(Error::Misaligned);
            }
            for &(other, other_len, _) in &parts[i + 1..] {
                if start < other + other_len && other < end {
                    return Err(Error::OutOfBounds);
                }
            }
        }
        Ok(Self {
            size,
            ring,
            driver_event,
            device_event,
        })
    }

    /// Number of descriptors.
    pub fn size(&self) -> u16 {
        self.size
    }
    /// Offset of the descriptor ring.
    pub fn ring(&self) -> usize {
        self.ring
    }
    /// Offset of the driver event suppression structure (written by the driver).
    pub fn driver_event(&self) -> usize {
        self.driver_event
    }
    /// Offset of the device event suppression structure (written by the device).
    pub fn device_event(&self) -> usize {
        self.device_event
    }
    /// Bytes from offset 0 to the end of the last part.
    pub fn total(&self) -> usize {
        (self.ring + DESC_SIZE * usize::from(self.size))
            .max(self.driver_event + 4)
            .max(self.device_event + 4)
    }
    pub(crate) fn slot(&self, index: u16) -> usize {
        self.ring + DESC_SIZE * usize::from(index)
    }
}

/// The flags that mark a descriptor available under driver wrap counter `wrap` (§2.8.1).
pub(crate) fn avail_flags(wrap: bool) -> u16 {
    if wrap { DESC_F_AVAIL } else { DESC_F_USED }
}

/// The flags that mark a descriptor used under device wrap counter `wrap` (§2.8.1).
pub(crate) fn used_flags(wrap: bool) -> u16 {
    if wrap { DESC_F_AVAIL | DESC_F_USED } else { 0 }
}

/// Whether `flags` mark a descriptor available for wrap counter `wrap`.
pub(crate) fn is_avail(flags: u16, wrap: bool) -> bool {
    (flags & DESC_F_AVAIL != 0) == wrap && (flags & DESC_F_USED != 0) != wrap
}

/// Whether `flags` mark a descriptor used for wrap counter `wrap`.
pub(crate) fn is_used(flags: u16, wrap: bool) -> bool {
    (flags & DESC_F_AVAIL != 0) == wrap && (flags & DESC_F_USED != 0) == wrap
}

/// Advances a ring position by `count` slots, toggling the wrap counter on each wrap.
pub(crate) fn advance(position: u16, wrap: bool, count: u16, size: u16) -> (u16, bool) {
    let next = u32::from(position) + u32::from(count);
    if next >= u32::from(size) {
        ((next - u32::from(size)) as u16, !wrap)
    } else {
        (next as u16, wrap)
    }
}

/// Reads an event suppression structure: (`off_wrap`, `flags`) (§2.8.14).
pub(crate) fn read_event(memory: &DmaRegion<'_>, offset: usize) -> Result<(u16, u16)> {
    Ok((memory.read_u16(offset)?, memory.read_u16(offset + 2)?))
}

/// Whether the peer, whose event suppression says (`off_wrap`, `flags`), wants a notification
/// now that our position moved from `new - moved` to `new` under wrap counter `wrap`
/// (§2.8.10, §2.8.21.3).
pub(crate) fn wants_event(
    off_wrap: u16,
    flags: u16,
    new: u16,
    wrap: bool,
    moved: u16,
    size: u16,
    event_idx: bool,
) -> bool {
    match flags & 3 {
        EVENT_FLAGS_DISABLE => false,
        EVENT_FLAGS_DESC if event_idx => {
            let mut event = off_wrap & 0x7fff;
            if (off_wrap >> 15 != 0) != wrap {
                event = event.wrapping_sub(size);
            }
            crate::queue::need_event(event, new, new.wrapping_sub(moved))
        }
        // ENABLE, or DESC without EVENT_IDX (invalid; notifying is the safe reading).
        _ => true,
    }
}
