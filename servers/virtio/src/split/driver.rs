//! Driver side of a split virtqueue.
//!
//! The device is untrusted: the driver keeps private copies of every descriptor it publishes
//! and of each chain's shape, walks only those copies when freeing, and checks every id and
//! length the device writes into the used ring.

use super::{
    AVAIL_F_NO_INTERRUPT, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE, DESC_SIZE, Descriptor,
    SplitLayout, USED_F_NO_NOTIFY,
};
use crate::barrier;
use crate::dma::DmaRegion;
use crate::features::{Features, bits};
use crate::queue::{Buffer, Completion, DriverQueue, QueueAddresses, Token, need_event};
use crate::{Error, Result};

/// What the driver remembers about a chain while the device holds it.
#[derive(Debug, Clone, Copy, Default)]
struct InFlight {
    busy: bool,
    descriptors: u16,
    writable_len: u64,
}

/// Memory for indirect tables: one table of `per_table` descriptors per head index.
#[derive(Debug, Clone, Copy)]
struct IndirectPool<'a> {
    memory: DmaRegion<'a>,
    per_table: u16,
}

/// The driver side of a split queue of `N` entries.
#[derive(Debug)]
pub struct SplitQueue<'a, const N: usize> {
    ring: DmaRegion<'a>,
    layout: SplitLayout,
    indirect: Option<IndirectPool<'a>>,
    event_idx: bool,
    /// Private copies of the descriptors; free descriptors are linked through `next`.
    descriptors: [Descriptor; N],
    in_flight: [InFlight; N],
    free_head: u16,
    free_count: u16,
    avail_idx: u16,
    notified_at: u16,
    last_used: u16,
    interrupts: bool,
}

impl<'a, const N: usize> SplitQueue<'a, N> {
    /// Sets up a queue in `ring` (at least [`SplitLayout::total`] bytes, zeroed by this call),
    /// using EVENT_IDX and indirect descriptors if `features` has them. `legacy` selects the
    /// legacy layout (§2.7.2).
    pub fn new(ring: DmaRegion<'a>, features: Features, legacy: bool) -> Result<Self> {
        let size = u16::try_from(N).map_err(|_| Error::BadQueueSize)?;
        let layout = SplitLayout::new(size, legacy)?;
        if ring.len() < layout.total() {
            return Err(Error::OutOfBounds);
        }
        ring.fill(0, layout.total(), 0)?;
        let mut descriptors = [Descriptor::default(); N];
        for (i, d) in descriptors.iter_mut().enumerate() {
            d.next = (i + 1) as u16;
        }
        Ok(Self {
            ring,
            layout,
            indirect: None,
            event_idx: features.has(bits::EVENT_IDX),
            descriptors,
            in_flight: [InFlight::default(); N],
            free_head: 0,
            free_count: size,
            avail_idx: 0,
            notified_at: 0,
            last_used: 0,
            interrupts: true,
        })
    }

    /// Lets chains of 2..=`per_table` buffers use one indirect table (§2.7.5.3) instead of
    /// several ring descriptors. Only valid if VIRTIO_F_INDIRECT_DESC was negotiated;
    /// `memory` must hold `N * per_table` descriptors.
    pub fn with_indirect(mut self, memory: DmaRegion<'a>, per_table: u16) -> Result<Self> {
        if per_table < 2 || memory.len() < N * usize::from(per_table) * DESC_SIZE {
            return Err(Error::OutOfBounds);
        }
        self.indirect = Some(IndirectPool { memory, per_table });
        Ok(self)
    }

    /// The ring layout.
    pub fn layout(&self) -> SplitLayout {
        self.layout
    }

    fn take_free(&mut self) -> u16 {
        let index = self.free_head;
        self.free_head = self.descriptors[usize::from(index)].next;
        self.free_count -= 1;
        index
    }

    fn publish_descriptor(&mut self, index: u16, descriptor: Descriptor) -> Result<()> {
        self.descriptors[usize::from(index)] = descriptor;
        descriptor.write(&self.ring, self.layout.desc_entry(index))
    }

    fn write_indirect_table(
        &mut self,
        pool: IndirectPool<'a>,
        head: u16,
        buffers: impl Iterator<Item = (Buffer, bool)>,
        count: u16,
    ) -> Result<Descriptor> {
        let table = usize::from(head) * usize::from(pool.per_table) * DESC_SIZE;
        for (i, (buffer, writable)) in buffers.enumerate() {
            let i = i as u16;
            let mut flags = if writable { DESC_F_WRITE } else { 0 };
            if i + 1 < count {
                flags |= DESC_F_NEXT;
            }
            let entry = Descriptor {
                addr: buffer.addr,
                len: buffer.len,
                flags,
                next: i + 1,
            };
            entry.write(&pool.memory, table + usize::from(i) * DESC_SIZE)?;
        }
        Ok(Descriptor {
            addr: pool.memory.bus_address(table),
            len: u32::from(count) * DESC_SIZE as u32,
            flags: DESC_F_INDIRECT,
            next: 0,
        })
    }

    fn free_chain(&mut self, head: u16) {
        let descriptors = self.in_flight[usize::from(head)].descriptors;
        let mut last = head;
        for _ in 1..descriptors {
            last = self.descriptors[usize::from(last)].next;
        }
        self.descriptors[usize::from(last)].next = self.free_head;
        self.free_head = head;
        self.free_count += descriptors;
        self.in_flight[usize::from(head)] = InFlight::default();
    }
}

impl<const N: usize> DriverQueue for SplitQueue<'_, N> {
    fn submit(&mut self, readable: &[Buffer], writable: &[Buffer]) -> Result<Token> {
        let total = readable.len() + writable.len();
        if total == 0 {
            return Err(Error::EmptyChain);
        }
        crate::queue::chain_bytes(readable, writable)?;
        let total = u16::try_from(total).map_err(|_| Error::QueueFull)?;
        let buffers = || {
            readable
                .iter()
                .map(|b| (*b, false))
                .chain(writable.iter().map(|b| (*b, true)))
        };
        let writable_len = writable.iter().map(|b| u64::from(b.len)).sum();
        // §2.7.5.3.1 / §2.8.19: an indirect table is a chain too, so no longer than the queue.
        let pool = self
            .indirect
            .filter(|p| total > 1 && total <= p.per_table && usize::from(total) <= N);
        let needed = if pool.is_some() { 1 } else { total };
        if needed > self.free_count {
            return Err(Error::QueueFull);
        }

        // §2.7.13.1: place the buffers into free descriptors, chaining as necessary.
        let head = self.take_free();
        if let Some(pool) = pool {
            let descriptor = self.write_indirect_table(pool, head, buffers(), total)?;
            self.publish_descriptor(head, descriptor)?;
        } else {
            let mut index = head;
            for (i, (buffer, is_writable)) in buffers().enumerate() {
                let last = i + 1 == usize::from(total);
                let next = if last { 0 } else { self.take_free() };
                let mut flags = if is_writable { DESC_F_WRITE } else { 0 };
                if !last {
                    flags |= DESC_F_NEXT;
                }
                let descriptor = Descriptor {
                    addr: buffer.addr,
                    len: buffer.len,
                    flags,
                    next,
                };
                self.publish_descriptor(index, descriptor)?;
                index = next;
            }
        }
        self.in_flight[usize::from(head)] = InFlight {
            busy: true,
            descriptors: needed,
            writable_len,
        };

        // §2.7.13.2: place the head index in the next available ring entry.
        self.ring
            .write_u16(self.layout.avail_entry(self.avail_idx), head)?;
        // §2.7.13.3.1: "The driver MUST perform a suitable memory barrier before the idx
        // update, to ensure the device sees the most up-to-date copy."
        barrier::publish();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.ring
            .write_u16(self.layout.avail_idx(), self.avail_idx)?;
        Ok(Token(head))
    }

    fn should_notify(&mut self) -> Result<bool> {
        let old = self.notified_at;
        let new = self.avail_idx;
        self.notified_at = new;
        if old == new {
            return Ok(false);
        }
        // §2.7.13.4.1: "The driver MUST perform a suitable memory barrier before reading flags
        // or avail_event, to avoid missing a notification."
        barrier::full();
        if self.event_idx {
            let avail_event = self.ring.read_u16(self.layout.avail_event())?;
            Ok(need_event(avail_event, new, old))
        } else {
            Ok(self.ring.read_u16(self.layout.used_flags())? & USED_F_NO_NOTIFY == 0)
        }
    }

    fn poll_used(&mut self) -> Result<Option<Completion>> {
        let used_idx = self.ring.read_u16(self.layout.used_idx())?;
        if used_idx == self.last_used {
            return Ok(None);
        }
        // The device cannot have used more chains than the driver made available.
        if used_idx.wrapping_sub(self.last_used) > self.avail_idx.wrapping_sub(self.last_used) {
            return Err(Error::Protocol);
        }
        // §2.7.8.2: the device sets the element before updating idx; pair that with a read
        // barrier so the element is not read before idx (§2.7.14).
        barrier::observe();
        let entry = self.layout.used_entry(self.last_used);
        let id = self.ring.read_u32(entry)?;
        let written = self.ring.read_u32(entry + 4)?;
        let head = usize::try_from(id).map_err(|_| Error::BadUsedId)?;
        let flight = *self.in_flight.get(head).ok_or(Error::BadUsedId)?;
        if !flight.busy {
            return Err(Error::BadUsedId);
        }
        if u64::from(written) > flight.writable_len {
            return Err(Error::BadUsedLength);
        }
        self.free_chain(head as u16);
        self.last_used = self.last_used.wrapping_add(1);
        if self.interrupts && self.event_idx {
            // §2.7.7: interrupt again once the device moves past what was just consumed.
            self.ring
                .write_u16(self.layout.used_event(), self.last_used)?;
        }
        Ok(Some(Completion {
            token: Token(head as u16),
            written,
        }))
    }

    fn disable_interrupts(&mut self) -> Result<()> {
        self.interrupts = false;
        if self.event_idx {
            // §2.7.7: with EVENT_IDX the flag is ignored; an event index just behind the
            // consumer position will not be crossed until the index wraps.
            self.ring
                .write_u16(self.layout.used_event(), self.last_used.wrapping_sub(1))
        } else {
            self.ring
                .write_u16(self.layout.avail_flags(), AVAIL_F_NO_INTERRUPT)
        }
    }

    fn enable_interrupts(&mut self) -> Result<bool> {
        self.interrupts = true;
        if self.event_idx {
            self.ring
                .write_u16(self.layout.used_event(), self.last_used)?;
        } else {
            self.ring.write_u16(self.layout.avail_flags(), 0)?;
        }
        // §2.7.14 (note): re-enable, barrier, then re-check, or a completion that raced with
        // the enable would go unnoticed.
        barrier::full();
        Ok(self.ring.read_u16(self.layout.used_idx())? != self.last_used)
    }

    fn free_descriptors(&self) -> usize {
        usize::from(self.free_count)
    }

    fn addresses(&self) -> QueueAddresses {
        QueueAddresses {
            desc: self.ring.bus_address(self.layout.desc()),
            driver: self.ring.bus_address(self.layout.avail()),
            device: self.ring.bus_address(self.layout.used()),
        }
    }

    fn size(&self) -> u16 {
        self.layout.size()
    }
}
