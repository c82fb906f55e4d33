//! Device side of a packed virtqueue, for an I/O server whose driver is untrusted.
//!
//! Each descriptor's fields are read once and the copy validated: availability of every slot of
//! a chain, a bound on chain length (no wrap-around loops), indirect tables inside the granted
//! area and not nested, and every buffer inside the granted area.

use super::{
    DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE, DESC_SIZE, EVENT_FLAGS_DESC, EVENT_FLAGS_DISABLE,
    EVENT_FLAGS_ENABLE, PackedLayout, advance, is_avail, read_event, used_flags, wants_event,
};
use crate::barrier;
use crate::dma::DmaRegion;
use crate::features::{Features, bits};
use crate::queue::{Chain, DeviceQueue, GrantedArea};
use crate::{Error, Result};

/// The device side of a packed queue.
#[derive(Debug)]
pub struct PackedDeviceQueue<'a> {
    ring: DmaRegion<'a>,
    layout: PackedLayout,
    area: GrantedArea<'a>,
    event_idx: bool,
    indirect: bool,
    next_avail: u16,
    avail_wrap: bool,
    next_used: u16,
    used_wrap: bool,
    pushed: u16,
    notifications: bool,
}

/// A packed descriptor copied out of shared memory (flags are read separately, first).
struct Descriptor {
    addr: u64,
    len: u32,
    id: u16,
}

impl Descriptor {
    fn read(memory: &DmaRegion<'_>, offset: usize) -> Result<Self> {
        Ok(Self {
            addr: memory.read_u64(offset)?,
            len: memory.read_u32(offset + 8)?,
            id: memory.read_u16(offset + 12)?,
        })
    }
}

impl<'a> PackedDeviceQueue<'a> {
    /// Serves the queue laid out as `layout` in `ring`; buffers must lie in `area`.
    pub fn new(
        ring: DmaRegion<'a>,
        layout: PackedLayout,
        area: GrantedArea<'a>,
        features: Features,
    ) -> Result<Self> {
        if ring.len() < layout.total() {
            return Err(Error::OutOfBounds);
        }
        let queue = Self {
            ring,
            layout,
            area,
            event_idx: features.has(bits::EVENT_IDX),
            indirect: features.has(bits::INDIRECT_DESC),
            next_avail: 0,
            avail_wrap: true,
            next_used: 0,
            used_wrap: true,
            pushed: 0,
            notifications: true,
        };
        if queue.event_idx {
            // Start in descriptor mode (§2.8.14) so EVENT_IDX suppression applies from the start.
            queue.enable_notifications_at_next()?;
        }
        Ok(queue)
    }

    fn enable_notifications_at_next(&self) -> Result<()> {
        let off_wrap = self.next_avail | (u16::from(self.avail_wrap) << 15);
        self.ring.write_u16(self.layout.device_event(), off_wrap)?;
        // §2.8.14: off_wrap must be visible before the flags that make the device read it.
        barrier::publish();
        self.ring
            .write_u16(self.layout.device_event() + 2, EVENT_FLAGS_DESC)
    }

    /// The client's granted area, for reading and writing chains.
    pub fn area(&self) -> &GrantedArea<'a> {
        &self.area
    }

    fn walk_indirect(
        &self,
        descriptor: &Descriptor,
        flags: u16,
        alone: bool,
        chain: &mut Chain,
    ) -> Result<()> {
        // §2.8.19: INDIRECT only if negotiated, never in a list linked by NEXT; whole
        // descriptors only.
        if !self.indirect || flags & DESC_F_NEXT != 0 || !alone {
            return Err(Error::BadIndirectTable);
        }
        let len = descriptor.len as usize;
        if len == 0
            || !len.is_multiple_of(DESC_SIZE)
            || len / DESC_SIZE > usize::from(self.layout.size())
        {
            return Err(Error::BadIndirectTable);
        }
        let table = self.area.translate(descriptor.addr, descriptor.len)?;
        let memory = self.area.memory();
        // §2.8.7: the table's descriptors are used in order; NEXT is not used inside it.
        for i in 0..len / DESC_SIZE {
            let offset = table + i * DESC_SIZE;
            let entry = Descriptor::read(memory, offset)?;
            let entry_flags = memory.read_u16(offset + 14)?;
            // §2.8.19: "The driver MUST NOT set any flags except DESC_F_WRITE within an
            // indirect descriptor."
            if entry_flags & !DESC_F_WRITE != 0 {
                return Err(Error::BadIndirectTable);
            }
            chain.append(
                &self.area,
                entry.addr,
                entry.len,
                entry_flags & DESC_F_WRITE != 0,
            )?;
        }
        Ok(())
    }
}

impl DeviceQueue for PackedDeviceQueue<'_> {
    fn pop_into(&mut self, chain: &mut Chain) -> Result<bool> {
        let size = self.layout.size();
        let mut flags = self.ring.read_u16(self.layout.slot(self.next_avail) + 14)?;
        if !is_avail(flags, self.avail_wrap) {
            return Ok(false);
        }
        // §2.8.21.1: once it sees the flags, the device may read the descriptor and the ones
        // after it; the driver's barrier (§2.8.21.1.1) pairs with this one.
        barrier::observe();
        chain.restart(0);
        let (mut slot, mut wrap) = (self.next_avail, self.avail_wrap);
        let mut slots: u16 = 0;
        loop {
            slots += 1;
            // A chain is never longer than the ring (§2.8.17); more means it runs into itself.
            if slots > size {
                return Err(Error::DescriptorLoop);
            }
            let descriptor = Descriptor::read(&self.ring, self.layout.slot(slot))?;
            // §2.8.6: the buffer id is in the last descriptor of the chain.
            chain.set_id(descriptor.id);
            if flags & DESC_F_INDIRECT != 0 {
                self.walk_indirect(&descriptor, flags, slots == 1, chain)?;
                break;
            }
            chain.append(
                &self.area,
                descriptor.addr,
                descriptor.len,
                flags & DESC_F_WRITE != 0,
            )?;
            if flags & DESC_F_NEXT == 0 {
                break;
            }
            (slot, wrap) = advance(slot, wrap, 1, size);
            flags = self.ring.read_u16(self.layout.slot(slot) + 14)?;
            // The driver exposes a chain by its first descriptor, so the rest must already
            // be available (§2.8.21.1).
            if !is_avail(flags, wrap) {
                return Err(Error::ChainNotAvailable);
            }
        }
        chain.set_ring_slots(slots);
        (self.next_avail, self.avail_wrap) = advance(self.next_avail, self.avail_wrap, slots, size);
        if self.notifications && self.event_idx {
            let off_wrap = self.next_avail | (u16::from(self.avail_wrap) << 15);
            self.ring.write_u16(self.layout.device_event(), off_wrap)?;
        }
        Ok(true)
    }

    fn push(&mut self, chain: &Chain, written: u32) -> Result<()> {
        if u64::from(written) > chain.writable_len() || chain.ring_slots() == 0 {
            return Err(Error::BadUsedLength);
        }
        let slot = self.layout.slot(self.next_used);
        self.ring.write_u32(slot + 8, written)?;
        self.ring.write_u16(slot + 12, chain.id())?;
        let mut flags = used_flags(self.used_wrap);
        if written > 0 {
            flags |= DESC_F_WRITE;
        }
        // §2.8.13/§2.8.22: the flags write hands the used descriptor to the driver; id and len
        // must be visible first.
        barrier::publish();
        self.ring.write_u16(slot + 14, flags)?;
        (self.next_used, self.used_wrap) = advance(
            self.next_used,
            self.used_wrap,
            chain.ring_slots(),
            self.layout.size(),
        );
        self.pushed = self.pushed.wrapping_add(chain.ring_slots());
        Ok(())
    }

    fn should_interrupt(&mut self) -> Result<bool> {
        let moved = core::mem::take(&mut self.pushed);
        if moved == 0 {
            return Ok(false);
        }
        // §2.8.10: mirror of §2.8.21.3.1: expose used descriptors before reading the driver's
        // event suppression structure.
        barrier::full();
        let (off_wrap, flags) = read_event(&self.ring, self.layout.driver_event())?;
        Ok(wants_event(
            off_wrap,
            flags,
            self.next_used,
            self.used_wrap,
            moved,
            self.layout.size(),
            self.event_idx,
        ))
    }

    fn disable_notifications(&mut self) -> Result<()> {
        self.notifications = false;
        self.ring
            .write_u16(self.layout.device_event() + 2, EVENT_FLAGS_DISABLE)
    }

    fn enable_notifications(&mut self) -> Result<bool> {
        self.notifications = true;
        if self.event_idx {
            self.enable_notifications_at_next()?;
        } else {
            self.ring
                .write_u16(self.layout.device_event() + 2, EVENT_FLAGS_ENABLE)?;
        }
        // §2.8.10: enable, barrier, re-check the next descriptor.
        barrier::full();
        let flags = self.ring.read_u16(self.layout.slot(self.next_avail) + 14)?;
        Ok(is_avail(flags, self.avail_wrap))
    }
}
