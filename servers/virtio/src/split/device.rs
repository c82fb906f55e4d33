//! Device side of a split virtqueue, for an I/O server whose driver is an untrusted partition.
//!
//! Each descriptor is copied out of shared memory once and validated from the copy, so the
//! driver rewriting a descriptor after validation cannot change what the device uses. Chains
//! are walked with a visit bound (no loops), index bounds, direction order, and every buffer
//! (and every indirect table) must lie inside the client's granted area.

use super::{
    AVAIL_F_NO_INTERRUPT, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE, DESC_SIZE, Descriptor,
    SplitLayout, USED_F_NO_NOTIFY,
};
use crate::barrier;
use crate::dma::DmaRegion;
use crate::features::{Features, bits};
use crate::queue::{Chain, DeviceQueue, GrantedArea, need_event};
use crate::{Error, Result};

/// The device side of a split queue.
#[derive(Debug)]
pub struct SplitDeviceQueue<'a> {
    ring: DmaRegion<'a>,
    layout: SplitLayout,
    area: GrantedArea<'a>,
    event_idx: bool,
    indirect: bool,
    last_avail: u16,
    used_idx: u16,
    interrupted_at: u16,
    notifications: bool,
}

impl<'a> SplitDeviceQueue<'a> {
    /// Serves the queue laid out as `layout` in `ring`; buffers must lie in `area`.
    pub fn new(
        ring: DmaRegion<'a>,
        layout: SplitLayout,
        area: GrantedArea<'a>,
        features: Features,
    ) -> Result<Self> {
        if ring.len() < layout.total() {
            return Err(Error::OutOfBounds);
        }
        Ok(Self {
            ring,
            layout,
            area,
            event_idx: features.has(bits::EVENT_IDX),
            indirect: features.has(bits::INDIRECT_DESC),
            last_avail: 0,
            used_idx: 0,
            interrupted_at: 0,
            notifications: true,
        })
    }

    /// The client's granted area, for reading and writing chains.
    pub fn area(&self) -> &GrantedArea<'a> {
        &self.area
    }

    fn walk(&self, head: u16, chain: &mut Chain) -> Result<()> {
        let size = self.layout.size();
        chain.restart(head);
        let mut index = head;
        let mut visited: u32 = 0;
        loop {
            if index >= size {
                return Err(Error::BadDescriptorIndex);
            }
            visited += 1;
            // §2.7.5.3.1 / §2.7.13.1: a chain is never longer than the queue size, so a longer
            // walk means the driver built a loop.
            if visited > u32::from(size) {
                return Err(Error::DescriptorLoop);
            }
            let descriptor = Descriptor::read(&self.ring, self.layout.desc_entry(index))?;
            if descriptor.flags & DESC_F_INDIRECT != 0 {
                return self.walk_indirect(&descriptor, chain);
            }
            chain.append(
                &self.area,
                descriptor.addr,
                descriptor.len,
                descriptor.flags & DESC_F_WRITE != 0,
            )?;
            if descriptor.flags & DESC_F_NEXT == 0 {
                return Ok(());
            }
            index = descriptor.next;
        }
    }

    fn walk_indirect(&self, descriptor: &Descriptor, chain: &mut Chain) -> Result<()> {
        // §2.7.5.3.1: INDIRECT only if negotiated, never together with NEXT; the table is a
        // whole number of descriptors.
        if !self.indirect || descriptor.flags & DESC_F_NEXT != 0 {
            return Err(Error::BadIndirectTable);
        }
        let len = descriptor.len as usize;
        if len == 0 || !len.is_multiple_of(DESC_SIZE) {
            return Err(Error::BadIndirectTable);
        }
        let count = len / DESC_SIZE;
        if count > usize::from(self.layout.size()) {
            return Err(Error::BadIndirectTable);
        }
        let table = self.area.translate(descriptor.addr, descriptor.len)?;
        let memory = self.area.memory();
        let mut index = 0usize;
        let mut visited = 0usize;
        loop {
            if index >= count {
                return Err(Error::BadDescriptorIndex);
            }
            visited += 1;
            if visited > count {
                return Err(Error::DescriptorLoop);
            }
            let entry = Descriptor::read(memory, table + index * DESC_SIZE)?;
            // §2.7.5.3.1: "The driver MUST NOT set the VIRTQ_DESC_F_INDIRECT flag within an
            // indirect descriptor".
            if entry.flags & DESC_F_INDIRECT != 0 {
                return Err(Error::BadIndirectTable);
            }
            chain.append(
                &self.area,
                entry.addr,
                entry.len,
                entry.flags & DESC_F_WRITE != 0,
            )?;
            if entry.flags & DESC_F_NEXT == 0 {
                return Ok(());
            }
            index = usize::from(entry.next);
        }
    }
}

impl DeviceQueue for SplitDeviceQueue<'_> {
    fn pop_into(&mut self, chain: &mut Chain) -> Result<bool> {
        let avail_idx = self.ring.read_u16(self.layout.avail_idx())?;
        let pending = avail_idx.wrapping_sub(self.last_avail);
        if pending == 0 {
            return Ok(false);
        }
        if pending > self.layout.size() {
            return Err(Error::BadAvailIndex);
        }
        // §2.7.13.3.1: the driver writes the ring entry and descriptors before idx; read them
        // only after reading idx.
        barrier::observe();
        let head = self
            .ring
            .read_u16(self.layout.avail_entry(self.last_avail))?;
        self.walk(head, chain)?;
        self.last_avail = self.last_avail.wrapping_add(1);
        if self.notifications && self.event_idx {
            // §2.7.10: ask for a notification once the driver moves past what was consumed.
            self.ring
                .write_u16(self.layout.avail_event(), self.last_avail)?;
        }
        Ok(true)
    }

    fn push(&mut self, chain: &Chain, written: u32) -> Result<()> {
        if u64::from(written) > chain.writable_len() {
            return Err(Error::BadUsedLength);
        }
        let entry = self.layout.used_entry(self.used_idx);
        self.ring.write_u32(entry, u32::from(chain.id()))?;
        self.ring.write_u32(entry + 4, written)?;
        // §2.7.8.2: "The device MUST set len prior to updating the used idx."
        barrier::publish();
        self.used_idx = self.used_idx.wrapping_add(1);
        self.ring.write_u16(self.layout.used_idx(), self.used_idx)
    }

    fn should_interrupt(&mut self) -> Result<bool> {
        let old = self.interrupted_at;
        let new = self.used_idx;
        self.interrupted_at = new;
        if old == new {
            return Ok(false);
        }
        // §2.7.7 mirrors §2.7.13.4.1: expose the used idx before reading flags/used_event.
        barrier::full();
        if self.event_idx {
            let used_event = self.ring.read_u16(self.layout.used_event())?;
            Ok(need_event(used_event, new, old))
        } else {
            Ok(self.ring.read_u16(self.layout.avail_flags())? & AVAIL_F_NO_INTERRUPT == 0)
        }
    }

    fn disable_notifications(&mut self) -> Result<()> {
        self.notifications = false;
        if self.event_idx {
            self.ring
                .write_u16(self.layout.avail_event(), self.last_avail.wrapping_sub(1))
        } else {
            self.ring
                .write_u16(self.layout.used_flags(), USED_F_NO_NOTIFY)
        }
    }

    fn enable_notifications(&mut self) -> Result<bool> {
        self.notifications = true;
        if self.event_idx {
            self.ring
                .write_u16(self.layout.avail_event(), self.last_avail)?;
        } else {
            self.ring.write_u16(self.layout.used_flags(), 0)?;
        }
        // §2.7.10: enable, barrier, re-check, so a submission racing the enable is seen.
        barrier::full();
        Ok(self.ring.read_u16(self.layout.avail_idx())? != self.last_avail)
    }
}
