//! Split virtqueues (§2.7): a descriptor table, an available ring written by the driver and a
//! used ring written by the device.

mod device;
mod driver;

pub use device::SplitDeviceQueue;
pub use driver::SplitQueue;

use crate::{Error, Result};

/// Descriptor flag: the chain continues at `next` (§2.7.5).
pub const DESC_F_NEXT: u16 = 1;
/// Descriptor flag: the buffer is device-writable (§2.7.5).
pub const DESC_F_WRITE: u16 = 2;
/// Descriptor flag: the buffer holds a table of indirect descriptors (§2.7.5.3).
pub const DESC_F_INDIRECT: u16 = 4;
/// Available ring flag: the driver does not want used buffer notifications (§2.7.7).
pub const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// Used ring flag: the device does not want available buffer notifications (§2.7.10).
pub const USED_F_NO_NOTIFY: u16 = 1;

/// Size of one descriptor: `le64 addr; le32 len; le16 flags; le16 next` (§2.7.5).
pub const DESC_SIZE: usize = 16;
/// Size of one used element: `le32 id; le32 len` (§2.7.8).
pub const USED_ELEM_SIZE: usize = 8;

/// A descriptor as copied out of shared memory, field by field, exactly once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Descriptor {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

impl Descriptor {
    pub(crate) fn read(memory: &crate::dma::DmaRegion<'_>, offset: usize) -> Result<Self> {
        Ok(Self {
            addr: memory.read_u64(offset)?,
            len: memory.read_u32(offset + 8)?,
            flags: memory.read_u16(offset + 12)?,
            next: memory.read_u16(offset + 14)?,
        })
    }

    pub(crate) fn write(&self, memory: &crate::dma::DmaRegion<'_>, offset: usize) -> Result<()> {
        memory.write_u64(offset, self.addr)?;
        memory.write_u32(offset + 8, self.len)?;
        memory.write_u16(offset + 12, self.flags)?;
        memory.write_u16(offset + 14, self.next)
    }
}

/// Byte offsets of the three parts of a split queue inside one region (§2.7, table of
/// alignments: descriptor table 16, available ring 2, used ring 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitLayout {
    size: u16,
    desc: usize,
    avail: usize,
    used: usize,
    total: usize,
}

impl SplitLayout {
    /// The layout for `size` entries. `legacy` places the used ring on the next 4096-byte
    /// boundary, as the legacy interface requires (§2.7.2).
    pub fn new(size: u16, legacy: bool) -> Result<Self> {
        // §2.7: "Queue Size value is always a power of 2. The maximum Queue Size value is 32768."
        if size == 0 || !size.is_power_of_two() || size > 32768 {
            return Err(Error::BadQueueSize);
        }
        let n = usize::from(size);
        let avail = DESC_SIZE * n;
        let avail_end = avail + 6 + 2 * n;
        let used_align = if legacy { 4096 } else { 4 };
        let used = avail_end.next_multiple_of(used_align);
        let total = used + 6 + USED_ELEM_SIZE * n;
        Ok(Self {
            size,
            desc: 0,
            avail,
            used,
            total,
        })
    }

    /// The layout of `size` entries, from explicit area offsets (the device side learns them
    /// from the driver), checked for overlap and alignment.
    pub fn from_offsets(size: u16, desc: usize, avail: usize, used: usize) -> Result<Self> {
        let base = Self::new(size, false)?;
        let n = usize::from(size);
        let parts = [
            (desc, DESC_SIZE * n, 16),
            (avail, 6 + 2 * n, 2),
            (used, 6 + USED_ELEM_SIZE * n, 4),
        ];
        let mut total = 0usize;
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
            total = total.max(end);
        }
        Ok(Self {
            desc,
            avail,
            used,
            total,
            ..base
        })
    }

    /// Number of entries.
    pub fn size(&self) -> u16 {
        self.size
    }
    /// Offset of the descriptor table.
    pub fn desc(&self) -> usize {
        self.desc
    }
    /// Offset of the available ring.
    pub fn avail(&self) -> usize {
        self.avail
    }
    /// Offset of the used ring.
    pub fn used(&self) -> usize {
        self.used
    }
    /// Bytes from offset 0 to the end of the last part.
    pub fn total(&self) -> usize {
        self.total
    }

    pub(crate) fn desc_entry(&self, index: u16) -> usize {
        self.desc + DESC_SIZE * usize::from(index)
    }
    pub(crate) fn avail_flags(&self) -> usize {
        self.avail
    }
    pub(crate) fn avail_idx(&self) -> usize {
        self.avail + 2
    }
    pub(crate) fn avail_entry(&self, idx: u16) -> usize {
        self.avail + 4 + 2 * usize::from(idx % self.size)
    }
    /// `used_event`, at the end of the available ring (§2.7.6).
    pub(crate) fn used_event(&self) -> usize {
        self.avail + 4 + 2 * usize::from(self.size)
    }
    pub(crate) fn used_flags(&self) -> usize {
        self.used
    }
    pub(crate) fn used_idx(&self) -> usize {
        self.used + 2
    }
    pub(crate) fn used_entry(&self, idx: u16) -> usize {
        self.used + 4 + USED_ELEM_SIZE * usize::from(idx % self.size)
    }
    /// `avail_event`, at the end of the used ring (§2.7.8).
    pub(crate) fn avail_event(&self) -> usize {
        self.used + 4 + USED_ELEM_SIZE * usize::from(self.size)
    }
}
