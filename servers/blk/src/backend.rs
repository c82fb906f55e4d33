//! The real disk behind the server: the [`Backend`] trait the request engine drives, and
//! [`VirtioBackend`], its implementation over a virtio-blk device reached through any
//! [`Transport`] (PCI modern or legacy on x86_64, MMIO on aarch64; the host tests use the
//! inter-partition transport with a simulated disk behind it).
//!
//! The backend owns a set of bounce *slots* in memory the real device can reach (the server's
//! DMA region): client data is copied into a slot before a write and out of it after a read.
//! When the client's data area is itself reachable by the device (a shared region whose DMA
//! owner is the server), [`Backend::submit_direct`] issues a request on the client's buffers
//! instead: the header and the status byte still live in the backend's own memory, so only the
//! data goes to or from client memory (see docs/io-servers.md, "Zero copy").

use ioserver::DeviceInterrupts;
use virtio::devices::blk;
use virtio::dma::DmaRegion;
use virtio::features::{Features, bits};
use virtio::queue::{Buffer, DriverQueue, Outstanding};
use virtio::split::SplitQueue;
use virtio::transport::{Transport, initialize, read_config};

/// Most bounce slots a backend offers, and most requests in flight (tags).
pub const MAX_SLOTS: usize = 64;
/// Most data segments of one request on client memory ([`Backend::submit_direct`]).
pub const MAX_DIRECT_SEGMENTS: usize = 64;

/// What a backend request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Read sectors into the slot's buffer.
    Read,
    /// Write the slot's buffer to sectors.
    Write,
    /// Make completed writes durable.
    Flush,
}

/// Why a backend refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendError {
    /// No room in the device's queue now: retry after a completion.
    Busy,
    /// The request cannot be issued (bad slot, length, or a broken device).
    Failed,
}

/// The real disk: asynchronous requests on bounce slots.
pub trait Backend: DeviceInterrupts {
    /// Size of the disk in 512-byte sectors.
    fn capacity(&self) -> u64;
    /// Number of bounce slots (at most [`MAX_SLOTS`]).
    fn slots(&self) -> usize;
    /// Bytes per slot, a multiple of 512: the largest single backend request.
    fn slot_len(&self) -> usize;
    /// Slot `slot`'s buffer.
    fn slot_buffer(&self, slot: usize) -> Option<DmaRegion<'_>>;
    /// Starts `op` on slot `slot`: `len` bytes at `sector` (ignored for a flush).
    fn submit(&mut self, slot: usize, op: Op, sector: u64, len: usize) -> Result<(), BackendError>;
    /// Requests that may be in flight at once: tags `0..tags()`. Tags below
    /// [`Backend::slots`] have a bounce buffer; the others serve only
    /// [`Backend::submit_direct`].
    fn tags(&self) -> usize {
        self.slots()
    }
    /// Whether the device takes requests on other memory at all, and if so the most data
    /// segments per request and the longest segment: what [`Backend::submit_direct`] accepts.
    fn direct_limits(&self) -> Option<(usize, u32)> {
        None
    }
    /// Starts a read or write on tag `tag` whose data is not in a bounce slot but at the given
    /// bus addresses (memory the device can reach: a client's data area), in order, `sector`
    /// onwards. The header and status byte stay in the backend's memory.
    fn submit_direct(
        &mut self,
        tag: usize,
        op: Op,
        sector: u64,
        data: &[Buffer],
    ) -> Result<(), BackendError> {
        let _ = (tag, op, sector, data);
        Err(BackendError::Failed)
    }
    /// Tells the device about the requests submitted since the last call, if it wants to know.
    fn kick(&mut self);
    /// Takes one finished request: its slot and whether it succeeded.
    fn poll(&mut self) -> Option<(usize, bool)>;
}

/// Bytes of backend memory reserved for request headers and status bytes.
const HEADER_AREA: usize = 4096;
/// Header at +0, status byte at +16, per slot.
const HEADER_STRIDE: usize = 32;

/// A virtio-blk device as the backend, with a split queue of `Q` entries.
#[derive(Debug)]
pub struct VirtioBackend<'a, T, const Q: usize> {
    transport: T,
    queue: SplitQueue<'a, Q>,
    memory: DmaRegion<'a>,
    slots: usize,
    slot_len: usize,
    /// Which tag each chain on the device is (and whether the device broke its ring).
    outstanding: Outstanding<Q>,
    capacity: u64,
    features: Features,
    /// Slots whose request finished without the device (a flush on a write-through disk).
    done_early: u64,
    /// Most data segments per request (the device's `seg_max` if it has one) and the longest
    /// segment (`size_max`), for requests on client memory.
    seg_max: usize,
    size_max: u32,
}

/// The features the server drives the real device with.
pub fn backend_features() -> Features {
    Features::from_bits(&[
        blk::features::FLUSH,
        blk::features::RO,
        blk::features::SEG_MAX,
        blk::features::SIZE_MAX,
        bits::EVENT_IDX,
    ])
}

impl<'a, T: Transport, const Q: usize> VirtioBackend<'a, T, Q> {
    /// Initialises the device (§3.1.1, or §3.1.2 for a legacy interface) with one split queue
    /// in `ring` and bounce slots of `slot_len` bytes in `memory` (both known to the device by
    /// their regions' bus addresses). `after_enable` runs once the queue is enabled, before
    /// DRIVER_OK (e.g. to route the queue's MSI-X vector).
    pub fn new(
        mut transport: T,
        ring: DmaRegion<'a>,
        memory: DmaRegion<'a>,
        slot_len: usize,
        after_enable: impl FnOnce(&mut T) -> virtio::Result<()>,
    ) -> virtio::Result<Self> {
        if slot_len == 0 || !slot_len.is_multiple_of(blk::SECTOR_SIZE as usize) {
            return Err(virtio::Error::OutOfBounds);
        }
        let slots = (memory.len().saturating_sub(HEADER_AREA) / slot_len).min(MAX_SLOTS);
        if slots == 0 {
            return Err(virtio::Error::OutOfBounds);
        }
        let mut queue = None;
        let features = initialize(&mut transport, backend_features(), |t, negotiated| {
            let q = SplitQueue::<Q>::new(ring, negotiated, t.is_legacy())?;
            t.enable_queue(0, q.size(), q.addresses())?;
            queue = Some(q);
            after_enable(t)
        })?;
        let queue = queue.ok_or(virtio::Error::QueueUnavailable)?;
        let mut capacity = [0u8; 8];
        read_config(&mut transport, blk::config::CAPACITY, &mut capacity)?;
        // Two descriptors of a chain are the header and the status byte.
        let mut seg_max = Q.saturating_sub(2).min(MAX_DIRECT_SEGMENTS);
        let mut size_max = u32::MAX;
        let mut word = [0u8; 4];
        if features.has(blk::features::SEG_MAX) {
            read_config(&mut transport, blk::config::SEG_MAX, &mut word)?;
            seg_max = seg_max.min(u32::from_le_bytes(word) as usize);
        }
        if features.has(blk::features::SIZE_MAX) {
            read_config(&mut transport, blk::config::SIZE_MAX, &mut word)?;
            size_max = u32::from_le_bytes(word);
        }
        Ok(Self {
            transport,
            queue,
            memory,
            slots,
            slot_len,
            outstanding: Outstanding::new(),
            capacity: u64::from_le_bytes(capacity),
            features,
            done_early: 0,
            seg_max,
            size_max,
        })
    }

    /// The negotiated features.
    pub fn features(&self) -> Features {
        self.features
    }

    /// Whether the real device is read-only.
    pub fn read_only(&self) -> bool {
        self.features.has(blk::features::RO)
    }

    /// The transport (e.g. to read status).
    pub fn transport(&mut self) -> &mut T {
        &mut self.transport
    }

    fn data_offset(&self, slot: usize) -> usize {
        HEADER_AREA + slot * self.slot_len
    }

    /// Writes tag `tag`'s header and a status byte of 0xff, and returns their buffers.
    fn header(&self, tag: usize, op: Op, sector: u64) -> Result<(Buffer, Buffer), BackendError> {
        let request_type = match op {
            Op::Read => blk::request_type::IN,
            Op::Write => blk::request_type::OUT,
            Op::Flush => blk::request_type::FLUSH,
        };
        // §5.2.6: `sector` is unused and 0 for anything but reads and writes.
        let sector = if op == Op::Flush { 0 } else { sector };
        let header = blk::RequestHeader {
            request_type,
            sector,
        };
        let at = tag * HEADER_STRIDE;
        self.memory
            .write_bytes(at, &header.to_bytes())
            .and_then(|()| self.memory.write_u8(at + 16, 0xff))
            .map_err(|_| BackendError::Failed)?;
        Ok((
            Buffer {
                addr: self.memory.bus_address(at),
                len: blk::RequestHeader::SIZE as u32,
            },
            Buffer {
                addr: self.memory.bus_address(at + 16),
                len: 1,
            },
        ))
    }

    /// Submits tag `tag`'s chain: `readable`, then `writable`.
    fn submit_chain(
        &mut self,
        tag: usize,
        readable: &[Buffer],
        writable: &[Buffer],
    ) -> Result<(), BackendError> {
        match self
            .outstanding
            .submit(&mut self.queue, tag, readable, writable)
        {
            Ok(_) => Ok(()),
            Err(virtio::Error::QueueFull) => Err(BackendError::Busy),
            Err(_) => Err(BackendError::Failed),
        }
    }
}

impl<T: Transport, const Q: usize> Backend for VirtioBackend<'_, T, Q> {
    fn capacity(&self) -> u64 {
        self.capacity
    }

    fn slots(&self) -> usize {
        self.slots
    }

    fn slot_len(&self) -> usize {
        self.slot_len
    }

    fn slot_buffer(&self, slot: usize) -> Option<DmaRegion<'_>> {
        if slot >= self.slots {
            return None;
        }
        self.memory
            .subregion(self.data_offset(slot), self.slot_len)
            .ok()
    }

    fn submit(&mut self, slot: usize, op: Op, sector: u64, len: usize) -> Result<(), BackendError> {
        if self.outstanding.is_broken() || slot >= self.slots || len > self.slot_len {
            return Err(BackendError::Failed);
        }
        if op == Op::Flush && !self.features.has(blk::features::FLUSH) {
            // §5.2.5 (legacy interface note): without VIRTIO_BLK_F_FLUSH the device's cache
            // is write-through, so completed writes are already durable.
            self.done_early |= 1 << slot;
            return Ok(());
        }
        if self.queue.free_descriptors() < 3 {
            return Err(BackendError::Busy);
        }
        let (header, status) = self.header(slot, op, sector)?;
        let data = Buffer {
            addr: self.memory.bus_address(self.data_offset(slot)),
            len: len as u32,
        };
        match op {
            Op::Write if len > 0 => self.submit_chain(slot, &[header, data], &[status]),
            Op::Read if len > 0 => self.submit_chain(slot, &[header], &[data, status]),
            _ => self.submit_chain(slot, &[header], &[status]),
        }
    }

    fn tags(&self) -> usize {
        // Every tag has a header and a status byte in the header area.
        MAX_SLOTS.min(HEADER_AREA / HEADER_STRIDE)
    }

    fn direct_limits(&self) -> Option<(usize, u32)> {
        (self.seg_max > 0).then_some((self.seg_max, self.size_max))
    }

    fn submit_direct(
        &mut self,
        tag: usize,
        op: Op,
        sector: u64,
        data: &[Buffer],
    ) -> Result<(), BackendError> {
        if self.outstanding.is_broken()
            || tag >= self.tags()
            || op == Op::Flush
            || data.is_empty()
            || data.len() > self.seg_max
            || data.iter().any(|b| b.len == 0 || b.len > self.size_max)
        {
            return Err(BackendError::Failed);
        }
        if self.queue.free_descriptors() < data.len() + 2 {
            return Err(BackendError::Busy);
        }
        let (header, status) = self.header(tag, op, sector)?;
        let mut chain = [header; MAX_DIRECT_SEGMENTS + 2];
        let n = data.len();
        if op == Op::Write {
            chain[1..=n].copy_from_slice(data);
            self.submit_chain(tag, &chain[..=n], &[status])
        } else {
            chain[..n].copy_from_slice(data);
            chain[n] = status;
            self.submit_chain(tag, &[header], &chain[..=n])
        }
    }

    fn kick(&mut self) {
        if matches!(self.queue.should_notify(), Ok(true)) {
            let _ = self.transport.notify(0);
        }
    }

    fn poll(&mut self) -> Option<(usize, bool)> {
        if self.done_early != 0 {
            let slot = self.done_early.trailing_zeros() as usize;
            self.done_early &= !(1 << slot);
            return Some((slot, true));
        }
        // A device that breaks the ring protocol is not trusted further: nothing completes,
        // and every later submit fails.
        let (slot, _) = self.outstanding.next(&mut self.queue)?;
        let status = self
            .memory
            .read_u8(slot * HEADER_STRIDE + 16)
            .unwrap_or(blk::status::IOERR);
        Some((slot, status == blk::status::OK))
    }
}

impl<T: Transport, const Q: usize> DeviceInterrupts for VirtioBackend<'_, T, Q> {
    fn ack_interrupt(&mut self) {
        self.transport.ack_interrupt();
    }

    fn suppress_interrupts(&mut self) {
        // A ring the device cannot reach any more shows up in the next poll.
        let _ = self.queue.disable_interrupts();
    }

    fn request_interrupt(&mut self) -> bool {
        // A device that broke the ring protocol completes nothing more: reporting its used
        // ring as "not empty" would keep the caller polling forever instead of sleeping.
        !self.outstanding.is_broken() && self.queue.enable_interrupts().unwrap_or(false)
    }
}
