//! A virtio-blk driver for client partitions, over Bulkhead's inter-partition VirtIO transport
//! (`bulkhead_virtio::transport::shmem`, served by `servers/blk`).
//!
//! The client lays out its data area itself: a page of request headers and status bytes (32
//! bytes per tag), then one data buffer per tag. A *tag* is a request slot: at most
//! `depth` requests are in flight, each using its tag's header, status byte and buffer.
//!
//! - Synchronous: [`BlkClient::read`], [`BlkClient::write`], [`BlkClient::flush`],
//!   [`BlkClient::get_id`] (longer transfers are split into buffer-sized requests).
//! - Asynchronous: fill [`BlkClient::buffer`], [`BlkClient::submit`] on a free tag, then
//!   [`BlkClient::poll`] or [`BlkClient::wait_any`] for completions.
//!
//! Restarts: when the server restarts it lays the channel out afresh (device status 0), and
//! when it declares the channel broken it sets DEVICE_NEEDS_RESET (§2.1.2). Either way every
//! request in flight is lost and fails with [`BlkError::Reset`] or [`BlkError::NeedsReset`];
//! the caller then calls [`BlkClient::reconnect`] (which waits for the server to lay the channel
//! out again) and retries. Nothing acknowledged by a completed flush is lost by a restart of
//! the server: the server completes writes and flushes only after the real device did.
#![no_std]
#![deny(unsafe_code)]

use virtio::devices::{blk, id};
use virtio::dma::DmaRegion;
use virtio::features::{Features, bits};
use virtio::queue::{Buffer, DriverQueue, Token};
use virtio::transport::shmem::Notifier;
use virtio_session::{Class, Session};

/// Most tags (requests in flight) a client uses.
pub const MAX_TAGS: usize = 64;
/// Bytes of the data area reserved for headers and status bytes.
const TAG_AREA: usize = 4096;
/// Bytes per tag in the tag area: header at +0, status byte at +16.
const TAG_STRIDE: usize = 32;
/// Sector size of `sector` fields (§5.2.6).
pub const SECTOR: usize = blk::SECTOR_SIZE as usize;
/// The request queue (§5.2.2).
const QUEUE: u16 = 0;

virtio_session::client_error! {
    /// Why a block request or the device failed.
    pub enum BlkError {
        /// The channel is not a block device.
        wrong_device: NotBlock,
        /// The request completed with VIRTIO_BLK_S_IOERR: out of range, a write to a read-only
        /// disk, a misaligned length, or the real device failed.
        Io,
        /// The request completed with VIRTIO_BLK_S_UNSUPP.
        Unsupported,
        /// The server did not answer within the notifier's waits.
        Timeout,
        /// A buffer is too long for the tag, not a whole number of sectors, or the tag is
        /// invalid or busy.
        BadRequest,
    }
}

/// A request's operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Read sectors into the tag's buffer.
    Read,
    /// Write the tag's buffer to sectors.
    Write,
    /// Make completed writes durable.
    Flush,
    /// The device ID string (20 bytes into the tag's buffer).
    GetId,
}

/// Options for [`BlkClient::attach`].
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Requests in flight at most (1..=[`MAX_TAGS`], and no more than the queue size).
    pub depth: usize,
    /// Consecutive empty waits after which a request fails with [`BlkError::Timeout`].
    pub max_waits: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            depth: 4,
            max_waits: 1000,
        }
    }
}

/// What the driver asks for: the block features it understands (§5.2.3).
pub fn supported_features() -> Features {
    Features::from_bits(&[
        blk::features::RO,
        blk::features::FLUSH,
        blk::features::SEG_MAX,
        bits::EVENT_IDX,
    ])
}

/// A virtio-blk device over a shared-memory channel, with a split queue of `Q` entries.
#[derive(Debug)]
pub struct BlkClient<'a, N: Notifier + Clone, const Q: usize = 16> {
    session: Session<'a, N, Q, 1>,
    options: Options,
    data: DmaRegion<'a>,
    capacity: u64,
    tag_bytes: usize,
    in_flight: [Option<Token>; MAX_TAGS],
    finished: [Option<u8>; MAX_TAGS],
}

impl<'a, N: Notifier + Clone, const Q: usize> BlkClient<'a, N, Q> {
    /// Attaches to the channel laid out in `region` and runs the initialisation of §3.1.1.
    /// [`BlkError::NotReady`] means the server has not laid it out yet: try again later.
    pub fn attach(region: DmaRegion<'a>, notifier: N, options: Options) -> Result<Self, BlkError> {
        if options.depth == 0 || options.depth > MAX_TAGS.min(Q) {
            return Err(BlkError::BadRequest);
        }
        let class = Class {
            device_type: id::BLOCK,
            features: supported_features(),
            // The tag area, then at least a sector per tag.
            data_bytes: TAG_AREA + options.depth * SECTOR,
        };
        Self::on(
            Session::attach(region, notifier, class, options.max_waits)?,
            options,
        )
    }

    /// The driver over a fresh session: no request in flight.
    fn on(mut session: Session<'a, N, Q, 1>, options: Options) -> Result<Self, BlkError> {
        let data = session.data_area();
        let mut capacity = [0u8; 8];
        session.read_config(blk::config::CAPACITY, &mut capacity)?;
        Ok(Self {
            tag_bytes: (data.len() - TAG_AREA) / options.depth / SECTOR * SECTOR,
            session,
            options,
            data,
            capacity: u64::from_le_bytes(capacity),
            in_flight: [None; MAX_TAGS],
            finished: [None; MAX_TAGS],
        })
    }

    /// Attaches afresh after [`BlkError::Reset`] or [`BlkError::NeedsReset`]: every request in
    /// flight is forgotten. Fails with [`BlkError::NotReady`] while the server is not back.
    pub fn reconnect(&mut self) -> Result<(), BlkError> {
        *self = Self::on(self.session.reattach()?, self.options)?;
        Ok(())
    }

    /// Capacity in 512-byte sectors, as the server exported it.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Whether the server exported the disk read-only (VIRTIO_BLK_F_RO).
    pub fn read_only(&self) -> bool {
        self.session.features().has(blk::features::RO)
    }

    /// Whether the server offers flush (VIRTIO_BLK_F_FLUSH).
    pub fn has_flush(&self) -> bool {
        self.session.features().has(blk::features::FLUSH)
    }

    /// The negotiated features.
    pub fn features(&self) -> Features {
        self.session.features()
    }

    /// Bytes of one tag's buffer: the largest single request.
    pub fn tag_bytes(&self) -> usize {
        self.tag_bytes
    }

    /// Requests in flight at most.
    pub fn depth(&self) -> usize {
        self.options.depth
    }

    /// The notifier (e.g. to count signals in tests).
    pub fn notifier(&mut self) -> &mut N {
        self.session.notifier()
    }

    /// Tag `tag`'s data buffer: fill it before a write, read it after a read.
    pub fn buffer(&self, tag: usize) -> Result<DmaRegion<'a>, BlkError> {
        if tag >= self.options.depth {
            return Err(BlkError::BadRequest);
        }
        self.data
            .subregion(TAG_AREA + tag * self.tag_bytes, self.tag_bytes)
            .map_err(BlkError::from)
    }

    /// Whether the device is still live: [`BlkError::Reset`] if the server laid the channel
    /// out again (status no longer DRIVER_OK), [`BlkError::NeedsReset`] if it declared it
    /// broken.
    pub fn check_device(&mut self) -> Result<(), BlkError> {
        Ok(self.session.check_device()?)
    }

    /// Submits a request on free tag `tag`: `bytes` of the tag's buffer (a multiple of 512 for
    /// reads and writes; ignored for flush; 20 for GET_ID) at `sector`. Notifies the server if
    /// it asked to be.
    pub fn submit(
        &mut self,
        tag: usize,
        op: Op,
        sector: u64,
        bytes: usize,
    ) -> Result<(), BlkError> {
        if tag >= self.options.depth {
            return Err(BlkError::BadRequest);
        }
        let effective = match op {
            Op::Read | Op::Write => bytes,
            Op::Flush => 0,
            Op::GetId => blk::ID_BYTES,
        };
        if effective > self.tag_bytes {
            return Err(BlkError::BadRequest);
        }
        self.submit_at(tag, op, sector, tag * self.tag_bytes, bytes)?;
        self.kick()
    }

    /// Notifies the server of the requests submitted since the last notification, if it asked
    /// to be (§2.7.13.4, with EVENT_IDX the whole batch is covered by one notification).
    pub fn kick(&mut self) -> Result<(), BlkError> {
        Ok(self.session.kick(QUEUE)?)
    }

    /// The buffer area (the data area after the tag area), for callers that lay their buffers
    /// out themselves with [`BlkClient::submit_at`] instead of one per tag.
    pub fn buffers(&self) -> DmaRegion<'a> {
        self.data
            .subregion(TAG_AREA, self.data.len() - TAG_AREA)
            .unwrap_or(self.data)
    }

    /// Like [`BlkClient::submit`], but the data is `bytes` bytes at `offset` of
    /// [`BlkClient::buffers`] (any range of it: e.g. requests larger than a tag's buffer when
    /// fewer are in flight), and the server is not notified: call [`BlkClient::kick`] after a
    /// batch of submissions. The caller keeps buffers of requests in flight apart.
    pub fn submit_at(
        &mut self,
        tag: usize,
        op: Op,
        sector: u64,
        offset: usize,
        bytes: usize,
    ) -> Result<(), BlkError> {
        if tag >= self.options.depth || self.in_flight[tag].is_some() {
            return Err(BlkError::BadRequest);
        }
        let (request_type, bytes) = match op {
            Op::Read => (blk::request_type::IN, bytes),
            Op::Write => (blk::request_type::OUT, bytes),
            Op::Flush => (blk::request_type::FLUSH, 0),
            Op::GetId => (blk::request_type::GET_ID, blk::ID_BYTES),
        };
        if offset
            .checked_add(bytes)
            .is_none_or(|end| end > self.data.len() - TAG_AREA)
            || (matches!(op, Op::Read | Op::Write) && !bytes.is_multiple_of(SECTOR))
        {
            return Err(BlkError::BadRequest);
        }
        let header = blk::RequestHeader {
            request_type,
            sector,
        };
        let tag_at = tag * TAG_STRIDE;
        self.data.write_bytes(tag_at, &header.to_bytes())?;
        self.data.write_u8(tag_at + 16, 0xff)?;
        let header = Buffer {
            addr: self.data.bus_address(tag_at),
            len: blk::RequestHeader::SIZE as u32,
        };
        let status = Buffer {
            addr: self.data.bus_address(tag_at + 16),
            len: 1,
        };
        let data = Buffer {
            addr: self.data.bus_address(TAG_AREA + offset),
            len: bytes as u32,
        };
        let queue = self.session.queue(QUEUE)?;
        let token = match op {
            Op::Write if bytes > 0 => queue.submit(&[header, data], &[status])?,
            Op::Read | Op::GetId if bytes > 0 => queue.submit(&[header], &[data, status])?,
            _ => queue.submit(&[header], &[status])?,
        };
        self.in_flight[tag] = Some(token);
        self.finished[tag] = None;
        Ok(())
    }

    /// Takes one finished request without waiting: its tag and its status byte (§5.2.6).
    pub fn poll(&mut self) -> Result<Option<(usize, u8)>, BlkError> {
        let done = self.take_finished()?;
        if done.is_none() {
            self.check_device()?;
        }
        Ok(done)
    }

    /// Waits for one request to finish; returns its tag and status byte.
    pub fn wait_any(&mut self) -> Result<(usize, u8), BlkError> {
        if self.in_flight.iter().all(Option::is_none) && self.finished.iter().all(Option::is_none) {
            return Err(BlkError::BadRequest);
        }
        let mut misses = 0;
        loop {
            if let Some(done) = self.take_finished()? {
                return Ok(done);
            }
            self.session.wait_used(QUEUE, &mut misses)?;
        }
    }

    /// Takes one finished request, reaping completions first.
    fn take_finished(&mut self) -> Result<Option<(usize, u8)>, BlkError> {
        while let Some((tag, _)) = self.session.take_used(QUEUE, &mut self.in_flight)? {
            // The status byte is the last byte the device writes (§5.2.6); a device that wrote
            // nothing leaves our 0xff, which reads as an error below.
            self.finished[tag] = Some(self.data.read_u8(tag * TAG_STRIDE + 16)?);
        }
        Ok(self.finished.iter().position(Option::is_some).map(|tag| {
            let status = self.finished[tag].take().unwrap_or(blk::status::IOERR);
            (tag, status)
        }))
    }

    /// Runs one request on tag 0 and waits for it.
    fn run(&mut self, op: Op, sector: u64, bytes: usize) -> Result<(), BlkError> {
        self.submit(0, op, sector, bytes)?;
        loop {
            let (tag, status) = self.wait_any()?;
            if tag == 0 {
                return match status {
                    blk::status::OK => Ok(()),
                    blk::status::UNSUPP => Err(BlkError::Unsupported),
                    _ => Err(BlkError::Io),
                };
            }
        }
    }

    /// Reads `out.len()` bytes (a multiple of 512) from `sector` on.
    pub fn read(&mut self, sector: u64, out: &mut [u8]) -> Result<(), BlkError> {
        if !out.len().is_multiple_of(SECTOR) {
            return Err(BlkError::BadRequest);
        }
        let mut sector = sector;
        for chunk in out.chunks_mut(self.tag_bytes) {
            self.run(Op::Read, sector, chunk.len())?;
            self.buffer(0)?.read_bytes(0, chunk)?;
            sector += (chunk.len() / SECTOR) as u64;
        }
        Ok(())
    }

    /// Writes `data` (a multiple of 512 bytes) from `sector` on. The write is complete when
    /// this returns; it is durable after a later [`BlkClient::flush`].
    pub fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), BlkError> {
        if !data.len().is_multiple_of(SECTOR) {
            return Err(BlkError::BadRequest);
        }
        let mut sector = sector;
        for chunk in data.chunks(self.tag_bytes) {
            self.buffer(0)?.write_bytes(0, chunk)?;
            self.run(Op::Write, sector, chunk.len())?;
            sector += (chunk.len() / SECTOR) as u64;
        }
        Ok(())
    }

    /// Makes every completed write durable (§5.2.6: VIRTIO_BLK_T_FLUSH).
    pub fn flush(&mut self) -> Result<(), BlkError> {
        self.run(Op::Flush, 0, 0)
    }

    /// The device ID string (§5.2.6: VIRTIO_BLK_T_GET_ID), up to 20 bytes, NUL padded.
    pub fn get_id(&mut self) -> Result<[u8; blk::ID_BYTES], BlkError> {
        self.run(Op::GetId, 0, blk::ID_BYTES)?;
        let mut id = [0u8; blk::ID_BYTES];
        self.buffer(0)?.read_bytes(0, &mut id)?;
        Ok(id)
    }
}
