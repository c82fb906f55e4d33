//! Driver side of a packed virtqueue.
//!
//! The device is untrusted: buffer ids and lengths in used descriptors are checked against the
//! driver's private record of what it made available, and ring positions advance by the slot
//! count the driver remembers, never by anything the device wrote.

use super::{
    DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE, DESC_SIZE, EVENT_FLAGS_DESC, EVENT_FLAGS_DISABLE,
    EVENT_FLAGS_ENABLE, PackedLayout, advance, avail_flags, is_used, read_event, wants_event,
};
use crate::barrier;
use crate::dma::DmaRegion;
use crate::features::{Features, bits};
use crate::queue::{Buffer, Completion, DriverQueue, QueueAddresses, Token};
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, Default)]
struct InFlight {
    busy: bool,
    slots: u16,
    writable_len: u64,
}

#[derive(Debug, Clone, Copy)]
struct IndirectPool<'a> {
    memory: DmaRegion<'a>,
    per_table: u16,
}

/// The driver side of a packed queue of `N` descriptors.
#[derive(Debug)]
pub struct PackedQueue<'a, const N: usize> {
    ring: DmaRegion<'a>,
    layout: PackedLayout,
    indirect: Option<IndirectPool<'a>>,
    event_idx: bool,
    in_flight: [InFlight; N],
    free_ids: [u16; N],
    free_id_count: usize,
    free_slots: u16,
    next_avail: u16,
    avail_wrap: bool,
    next_used: u16,
    used_wrap: bool,
    added: u16,
    interrupts: bool,
}

impl<'a, const N: usize> PackedQueue<'a, N> {
    /// Sets up a queue in `ring` (at least [`PackedLayout::total`] bytes, zeroed by this call).
    pub fn new(ring: DmaRegion<'a>, features: Features) -> Result<Self> {
        let size = u16::try_from(N).map_err(|_| Error::BadQueueSize)?;
        let layout = PackedLayout::new(size)?;
        if ring.len() < layout.total() {
            return Err(Error::OutOfBounds);
        }
        ring.fill(0, layout.total(), 0)?;
        let mut free_ids = [0u16; N];
        for (i, id) in free_ids.iter_mut().enumerate() {
            *id = (N - 1 - i) as u16;
        }
        let queue = Self {
            ring,
            layout,
            indirect: None,
            event_idx: features.has(bits::EVENT_IDX),
            in_flight: [InFlight::default(); N],
            free_ids,
            free_id_count: N,
            free_slots: size,
            next_avail: 0,
            // §2.8.1: both wrap counters start at 1.
            avail_wrap: true,
            next_used: 0,
            used_wrap: true,
            added: 0,
            interrupts: true,
        };
        if queue.event_idx {
            // Start in descriptor mode (§2.8.14) so EVENT_IDX suppression applies from the start.
            queue.write_driver_event(EVENT_FLAGS_DESC)?;
        }
        Ok(queue)
    }

    /// Lets chains of 2..=`per_table` buffers use one indirect table (§2.8.7); `memory` must
    /// hold `N * per_table` descriptors. Only valid if VIRTIO_F_INDIRECT_DESC was negotiated.
    pub fn with_indirect(mut self, memory: DmaRegion<'a>, per_table: u16) -> Result<Self> {
        if per_table < 2 || memory.len() < N * usize::from(per_table) * DESC_SIZE {
            return Err(Error::OutOfBounds);
        }
        self.indirect = Some(IndirectPool { memory, per_table });
        Ok(self)
    }

    /// The ring layout.
    pub fn layout(&self) -> PackedLayout {
        self.layout
    }

    fn write_descriptor(
        memory: &DmaRegion<'_>,
        offset: usize,
        buffer: Buffer,
        id: u16,
    ) -> Result<()> {
        memory.write_u64(offset, buffer.addr)?;
        memory.write_u32(offset + 8, buffer.len)?;
        memory.write_u16(offset + 12, id)
    }

    fn write_driver_event(&self, flags: u16) -> Result<()> {
        let offset = self.layout.driver_event();
        if flags == EVENT_FLAGS_DESC {
            let off_wrap = self.next_used | (u16::from(self.used_wrap) << 15);
            self.ring.write_u16(offset, off_wrap)?;
            // §2.8.14: the device reads off_wrap when it sees DESC; publish it first.
            barrier::publish();
        }
        self.ring.write_u16(offset + 2, flags)
    }
}

impl<const N: usize> DriverQueue for PackedQueue<'_, N> {
    fn submit(&mut self, readable: &[Buffer], writable: &[Buffer]) -> Result<Token> {
        let total = readable.len() + writable.len();
        if total == 0 {
            return Err(Error::EmptyChain);
        }
        crate::queue::chain_bytes(readable, writable)?;
        let total = u16::try_from(total).map_err(|_| Error::QueueFull)?;
        // §2.7.5.3.1 / §2.8.19: an indirect table is a chain too, so no longer than the queue.
        let pool = self
            .indirect
            .filter(|p| total > 1 && total <= p.per_table && usize::from(total) <= N);
        let slots = if pool.is_some() { 1 } else { total };
        if slots > self.free_slots || self.free_id_count == 0 {
            return Err(Error::QueueFull);
        }
        self.free_id_count -= 1;
        let id = self.free_ids[self.free_id_count];
        let buffers = readable
            .iter()
            .map(|b| (*b, false))
            .chain(writable.iter().map(|b| (*b, true)));
        let writable_len = writable.iter().map(|b| u64::from(b.len)).sum();

        let head = self.next_avail;
        let head_flags;
        if let Some(pool) = pool {
            let table = usize::from(id) * usize::from(pool.per_table) * DESC_SIZE;
            for (i, (buffer, is_writable)) in buffers.enumerate() {
                let offset = table + i * DESC_SIZE;
                Self::write_descriptor(&pool.memory, offset, buffer, id)?;
                pool.memory
                    .write_u16(offset + 14, if is_writable { DESC_F_WRITE } else { 0 })?;
            }
            let descriptor = Buffer {
                addr: pool.memory.bus_address(table),
                len: u32::from(total) * DESC_SIZE as u32,
            };
            Self::write_descriptor(&self.ring, self.layout.slot(head), descriptor, id)?;
            head_flags = DESC_F_INDIRECT | avail_flags(self.avail_wrap);
            (self.next_avail, self.avail_wrap) =
                advance(head, self.avail_wrap, 1, self.layout.size());
        } else {
            let mut first_flags = 0;
            for (i, (buffer, is_writable)) in buffers.enumerate() {
                let slot = self.next_avail;
                Self::write_descriptor(&self.ring, self.layout.slot(slot), buffer, id)?;
                let mut flags = avail_flags(self.avail_wrap);
                if is_writable {
                    flags |= DESC_F_WRITE;
                }
                if i + 1 < usize::from(total) {
                    flags |= DESC_F_NEXT;
                }
                // §2.8.21.1: the first descriptor's flags are written last, so the device never
                // sees a partially built chain.
                if i == 0 {
                    first_flags = flags;
                } else {
                    self.ring.write_u16(self.layout.slot(slot) + 14, flags)?;
                }
                (self.next_avail, self.avail_wrap) =
                    advance(slot, self.avail_wrap, 1, self.layout.size());
            }
            head_flags = first_flags;
        }
        // §2.8.21.1.1: "The driver MUST perform a suitable memory barrier before the flags
        // update, to ensure the device sees the most up-to-date copy."
        barrier::publish();
        self.ring
            .write_u16(self.layout.slot(head) + 14, head_flags)?;
        self.in_flight[usize::from(id)] = InFlight {
            busy: true,
            slots,
            writable_len,
        };
        self.free_slots -= slots;
        self.added = self.added.wrapping_add(slots);
        Ok(Token(id))
    }

    fn should_notify(&mut self) -> Result<bool> {
        let moved = core::mem::take(&mut self.added);
        if moved == 0 {
            return Ok(false);
        }
        // §2.8.21.3.1: "The driver MUST perform a suitable memory barrier before reading the
        // Event Suppression structure occupying the Device Area."
        barrier::full();
        let (off_wrap, flags) = read_event(&self.ring, self.layout.device_event())?;
        Ok(wants_event(
            off_wrap,
            flags,
            self.next_avail,
            self.avail_wrap,
            moved,
            self.layout.size(),
            self.event_idx,
        ))
    }

    fn poll_used(&mut self) -> Result<Option<Completion>> {
        let slot = self.layout.slot(self.next_used);
        let flags = self.ring.read_u16(slot + 14)?;
        if !is_used(flags, self.used_wrap) {
            return Ok(None);
        }
        if usize::from(self.free_slots) == N {
            // Nothing is in flight, so nothing can have been used.
            return Err(Error::Protocol);
        }
        // §2.8.22: read the id and length only after seeing the flags (read barrier).
        barrier::observe();
        let id = self.ring.read_u16(slot + 12)?;
        let len = self.ring.read_u32(slot + 8)?;
        let flight = *self
            .in_flight
            .get(usize::from(id))
            .ok_or(Error::BadUsedId)?;
        if !flight.busy {
            return Err(Error::BadUsedId);
        }
        // §2.8.4: the length is only meaningful when the device set WRITE in the used flags.
        let written = if flags & DESC_F_WRITE != 0 { len } else { 0 };
        if u64::from(written) > flight.writable_len {
            return Err(Error::BadUsedLength);
        }
        self.in_flight[usize::from(id)] = InFlight::default();
        self.free_ids[self.free_id_count] = id;
        self.free_id_count += 1;
        self.free_slots += flight.slots;
        (self.next_used, self.used_wrap) = advance(
            self.next_used,
            self.used_wrap,
            flight.slots,
            self.layout.size(),
        );
        if self.interrupts && self.event_idx {
            self.write_driver_event(EVENT_FLAGS_DESC)?;
        }
        Ok(Some(Completion {
            token: Token(id),
            written,
        }))
    }

    fn disable_interrupts(&mut self) -> Result<()> {
        self.interrupts = false;
        self.write_driver_event(EVENT_FLAGS_DISABLE)
    }

    fn enable_interrupts(&mut self) -> Result<bool> {
        self.interrupts = true;
        self.write_driver_event(if self.event_idx {
            EVENT_FLAGS_DESC
        } else {
            EVENT_FLAGS_ENABLE
        })?;
        // §2.8.22 (example): enable, memory barrier, re-test the next used descriptor.
        barrier::full();
        let flags = self.ring.read_u16(self.layout.slot(self.next_used) + 14)?;
        Ok(is_used(flags, self.used_wrap) && usize::from(self.free_slots) != N)
    }

    fn free_descriptors(&self) -> usize {
        usize::from(self.free_slots)
    }

    fn addresses(&self) -> QueueAddresses {
        QueueAddresses {
            desc: self.ring.bus_address(self.layout.ring()),
            driver: self.ring.bus_address(self.layout.driver_event()),
            device: self.ring.bus_address(self.layout.device_event()),
        }
    }

    fn size(&self) -> u16 {
        self.layout.size()
    }
}
