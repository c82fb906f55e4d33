//! Bulkhead's inter-partition transport: a client partition drives a device served by an I/O
//! server partition through one shared region and a pair of notifications.
//!
//! The shared region holds a control block (status, features, queue table, configuration
//! space), a ring area for the virtqueues and a data area for buffers. Buffers and rings are
//! named by offsets inside their area, so a client can only ever name memory it shares with the
//! server; the server checks every offset. The exact byte layout and the handshakes are in
//! docs/virtio.md; the constants are in [`layout`].
//!
//! Status and queue setup are requests: the client writes the fields, bumps `REQUEST_SEQ` and
//! notifies; the server validates, answers in `DEVICE_STATUS` (and queue `ready` flags), copies
//! the sequence number into `ACK_SEQ` and notifies back. The VirtIO rule that the driver
//! re-reads FEATURES_OK (§3.1.1 step 6) thus sees the server's verdict.

use crate::barrier;
use crate::dma::DmaRegion;
use crate::features::{Features, bits, status};
use crate::packed::{PackedDeviceQueue, PackedLayout};
use crate::queue::{GrantedArea, QueueAddresses};
use crate::split::{SplitDeviceQueue, SplitLayout};
use crate::transport::{InterruptStatus, Transport};
use crate::{Error, Result};

#[cfg(feature = "alloc")]
pub mod sim;

/// Byte offsets in the shared region. "S" fields are written only by the server, "C" fields
/// only by the client; each side treats what the other wrote as untrusted.
pub mod layout {
    /// S, u32: [`MAGIC`](super::MAGIC).
    pub const MAGIC: usize = 0x000;
    /// S, u32: [`LAYOUT_VERSION`](super::LAYOUT_VERSION).
    pub const VERSION: usize = 0x004;
    /// S, u32: VirtIO device type (§5).
    pub const DEVICE_TYPE: usize = 0x008;
    /// S, u16: number of queues.
    pub const NUM_QUEUES: usize = 0x00c;
    /// S, u16: largest queue size the server accepts.
    pub const MAX_QUEUE_SIZE: usize = 0x00e;
    /// S, u64: offered features.
    pub const DEVICE_FEATURES: usize = 0x010;
    /// C, u64: accepted features, read by the server when FEATURES_OK is requested.
    pub const DRIVER_FEATURES: usize = 0x018;
    /// C, u32: the device status the client asks for (low 8 bits); 0 asks for a reset.
    pub const DRIVER_STATUS: usize = 0x020;
    /// C, u32: incremented by the client after each request.
    pub const REQUEST_SEQ: usize = 0x024;
    /// S, u32: the device status the server accepted.
    pub const DEVICE_STATUS: usize = 0x028;
    /// S, u32: the last `REQUEST_SEQ` the server answered.
    pub const ACK_SEQ: usize = 0x02c;
    /// S, u32: configuration generation (§2.5), bumped on every configuration change.
    pub const CONFIG_GENERATION: usize = 0x030;
    /// S, u32: bytes of configuration space, at most [`CONFIG_MAX`].
    pub const CONFIG_LEN: usize = 0x034;
    /// C sets / S clears, u32: bit q = available buffer notification for queue q.
    pub const KICKS: usize = 0x038;
    /// S sets / C clears, u32: bit q = used buffer notification for queue q; bit 31 =
    /// configuration change.
    pub const INTERRUPTS: usize = 0x03c;
    /// S, u64: offset and length of the ring area in the region.
    pub const RING_AREA_OFFSET: usize = 0x040;
    /// S, u64.
    pub const RING_AREA_LEN: usize = 0x048;
    /// S, u64: offset and length of the data area in the region.
    pub const DATA_AREA_OFFSET: usize = 0x050;
    /// S, u64.
    pub const DATA_AREA_LEN: usize = 0x058;
    /// Queue table: [`MAX_QUEUES`](super::MAX_QUEUES) entries of [`QUEUE_ENTRY_SIZE`] bytes.
    pub const QUEUE_TABLE: usize = 0x100;
    /// Bytes per queue table entry.
    pub const QUEUE_ENTRY_SIZE: usize = 32;
    /// C, u16 (in an entry): queue size.
    pub const Q_SIZE: usize = 0;
    /// S, u16: largest size for this queue (0: no queue).
    pub const Q_MAX_SIZE: usize = 2;
    /// C, u16: 1 asks the server to enable the queue.
    pub const Q_ENABLE: usize = 4;
    /// S, u16: 1 once the server validated and enabled the queue.
    pub const Q_READY: usize = 6;
    /// C, u64: descriptor area, as an offset in the ring area.
    pub const Q_DESC: usize = 8;
    /// C, u64: driver area offset.
    pub const Q_DRIVER: usize = 16;
    /// C, u64: device area offset.
    pub const Q_DEVICE: usize = 24;
    /// Device configuration space.
    pub const CONFIG: usize = 0x300;
    /// Largest configuration space.
    pub const CONFIG_MAX: usize = 0x100;
    /// Size of the control block; the ring area starts at or after it.
    pub const CONTROL_BLOCK_SIZE: usize = 0x1000;
}

/// "BHVC" in little-endian: a Bulkhead VirtIO channel.
pub const MAGIC: u32 = 0x4356_4842;
/// Version of the control block layout.
pub const LAYOUT_VERSION: u32 = 1;
/// Queues per channel.
pub const MAX_QUEUES: usize = 16;
/// Interrupt bit for a configuration change.
pub const INTERRUPT_CONFIG: u32 = 1 << 31;
/// How many notifications a client waits for an answer before giving up on a request.
pub const MAX_WAITS: u32 = 1024;

/// A notification channel to the peer partition: the kernel's notification objects in a real
/// partition, an in-process simulation in tests.
pub trait Notifier {
    /// Signals the peer (kick or interrupt).
    fn notify_peer(&mut self);
    /// Takes a pending signal from the peer, without blocking.
    fn take_pending(&mut self) -> bool;
    /// Waits for a signal from the peer. The default spins on [`Notifier::take_pending`] a
    /// bounded number of times; a partition blocks in the kernel instead.
    fn wait(&mut self) -> bool {
        (0..1 << 16).any(|_| self.take_pending())
    }
}

fn queue_entry(queue: u16, field: usize) -> usize {
    layout::QUEUE_TABLE + usize::from(queue) * layout::QUEUE_ENTRY_SIZE + field
}

fn area(region: &DmaRegion<'_>, offset_field: usize, len_field: usize) -> Result<(usize, usize)> {
    let offset = usize::try_from(region.read_u64(offset_field)?).map_err(|_| Error::Protocol)?;
    let len = usize::try_from(region.read_u64(len_field)?).map_err(|_| Error::Protocol)?;
    region.subregion(offset, len).map_err(|_| Error::Protocol)?;
    if offset < layout::CONTROL_BLOCK_SIZE {
        return Err(Error::Protocol);
    }
    Ok((offset, len))
}

/// The client (driver) end of a channel; implements [`Transport`].
#[derive(Debug)]
pub struct SharedMemoryTransport<'a, N> {
    region: DmaRegion<'a>,
    rings: DmaRegion<'a>,
    data: DmaRegion<'a>,
    notifier: N,
    device_type: u32,
    num_queues: u16,
    sequence: u32,
}

impl<'a, N: Notifier> SharedMemoryTransport<'a, N> {
    /// Attaches to a channel the server has laid out in `region`.
    pub fn new(region: DmaRegion<'a>, notifier: N) -> Result<Self> {
        if region.read_u32(layout::MAGIC)? != MAGIC {
            return Err(Error::NoDevice);
        }
        if region.read_u32(layout::VERSION)? != LAYOUT_VERSION {
            return Err(Error::UnsupportedVersion);
        }
        let (ring_offset, ring_len) =
            area(&region, layout::RING_AREA_OFFSET, layout::RING_AREA_LEN)?;
        let (data_offset, data_len) =
            area(&region, layout::DATA_AREA_OFFSET, layout::DATA_AREA_LEN)?;
        let num_queues = region.read_u16(layout::NUM_QUEUES)?.min(MAX_QUEUES as u16);
        Ok(Self {
            rings: region.subregion(ring_offset, ring_len)?.rebased(0),
            data: region.subregion(data_offset, data_len)?.rebased(0),
            device_type: region.read_u32(layout::DEVICE_TYPE)?,
            sequence: region.read_u32(layout::REQUEST_SEQ)?,
            region,
            notifier,
            num_queues,
        })
    }

    /// Where the client places its virtqueues; bus addresses are offsets in this area.
    pub fn ring_area(&self) -> DmaRegion<'a> {
        self.rings
    }

    /// Where the client places its buffers; bus addresses are offsets in this area.
    pub fn data_area(&self) -> DmaRegion<'a> {
        self.data
    }

    /// The notifier, e.g. to wait for interrupts.
    pub fn notifier(&mut self) -> &mut N {
        &mut self.notifier
    }

    /// Publishes the fields written so far as one request and waits for the server's answer.
    fn request(&mut self) -> Result<()> {
        self.sequence = self.sequence.wrapping_add(1);
        // The server reads the request's fields after seeing the new sequence number.
        barrier::publish();
        self.region.write_u32(layout::REQUEST_SEQ, self.sequence)?;
        self.notifier.notify_peer();
        for _ in 0..MAX_WAITS {
            if self.region.read_u32(layout::ACK_SEQ)? == self.sequence {
                // The answer's fields were written before ACK_SEQ.
                barrier::observe();
                return Ok(());
            }
            self.notifier.wait();
        }
        Err(Error::Timeout)
    }
}

impl<N: Notifier> Transport for SharedMemoryTransport<'_, N> {
    fn device_type(&self) -> u32 {
        self.device_type
    }
    fn is_legacy(&self) -> bool {
        false
    }
    fn device_features(&mut self) -> Features {
        Features(self.region.read_u64(layout::DEVICE_FEATURES).unwrap_or(0))
    }
    fn set_driver_features(&mut self, features: Features) {
        // In bounds by construction (the control block is checked in `new`).
        let _ = self.region.write_u64(layout::DRIVER_FEATURES, features.0);
    }
    fn status(&mut self) -> u8 {
        self.region
            .read_u32(layout::DEVICE_STATUS)
            .map_or(status::FAILED, |s| s as u8)
    }
    fn set_status(&mut self, status: u8) {
        if status == 0 {
            // A reset withdraws every queue: the client's enable flags go with it, or the
            // server would re-enable stale queues at the next FEATURES_OK.
            for queue in 0..self.num_queues {
                let _ = self
                    .region
                    .write_u16(queue_entry(queue, layout::Q_ENABLE), 0);
            }
        }
        // A lost answer shows up as a status that did not change, which the caller checks.
        let _ = self
            .region
            .write_u32(layout::DRIVER_STATUS, u32::from(status))
            .and_then(|()| self.request());
    }
    fn max_queue_size(&mut self, queue: u16) -> Result<u16> {
        if queue >= self.num_queues {
            return Err(Error::QueueUnavailable);
        }
        if self.region.read_u16(queue_entry(queue, layout::Q_READY))? != 0 {
            return Err(Error::QueueUnavailable);
        }
        match self
            .region
            .read_u16(queue_entry(queue, layout::Q_MAX_SIZE))?
        {
            0 => Err(Error::QueueUnavailable),
            max => Ok(max),
        }
    }
    fn enable_queue(&mut self, queue: u16, size: u16, addresses: QueueAddresses) -> Result<()> {
        let max = self.max_queue_size(queue)?;
        if size == 0 || size > max {
            return Err(Error::BadQueueSize);
        }
        self.region
            .write_u16(queue_entry(queue, layout::Q_SIZE), size)?;
        self.region
            .write_u64(queue_entry(queue, layout::Q_DESC), addresses.desc)?;
        self.region
            .write_u64(queue_entry(queue, layout::Q_DRIVER), addresses.driver)?;
        self.region
            .write_u64(queue_entry(queue, layout::Q_DEVICE), addresses.device)?;
        self.region
            .write_u16(queue_entry(queue, layout::Q_ENABLE), 1)?;
        self.request()?;
        if self.region.read_u16(queue_entry(queue, layout::Q_READY))? != 1 {
            return Err(Error::QueueUnavailable);
        }
        Ok(())
    }
    fn notify(&mut self, queue: u16) -> Result<()> {
        if queue >= self.num_queues {
            return Err(Error::QueueUnavailable);
        }
        self.region.fetch_or_u32(layout::KICKS, 1 << queue)?;
        self.notifier.notify_peer();
        Ok(())
    }
    fn ack_interrupt(&mut self) -> InterruptStatus {
        let bits = self.region.swap_u32(layout::INTERRUPTS, 0).unwrap_or(0);
        InterruptStatus {
            queue: bits & !INTERRUPT_CONFIG != 0,
            configuration: bits & INTERRUPT_CONFIG != 0,
        }
    }
    fn config_generation(&mut self) -> u32 {
        self.region.read_u32(layout::CONFIG_GENERATION).unwrap_or(0)
    }
    fn read_config_u8(&mut self, offset: usize) -> Result<u8> {
        let at = self.config_offset(offset, 1)?;
        self.region.read_u8(at)
    }
    fn read_config_u16(&mut self, offset: usize) -> Result<u16> {
        let at = self.config_offset(offset, 2)?;
        self.region.read_u16(at)
    }
    fn read_config_u32(&mut self, offset: usize) -> Result<u32> {
        let at = self.config_offset(offset, 4)?;
        self.region.read_u32(at)
    }
    fn write_config_u8(&mut self, offset: usize, value: u8) -> Result<()> {
        let at = self.config_offset(offset, 1)?;
        self.region.write_u8(at, value)?;
        self.request()
    }
    fn write_config_u16(&mut self, offset: usize, value: u16) -> Result<()> {
        let at = self.config_offset(offset, 2)?;
        self.region.write_u16(at, value)?;
        self.request()
    }
    fn write_config_u32(&mut self, offset: usize, value: u32) -> Result<()> {
        let at = self.config_offset(offset, 4)?;
        self.region.write_u32(at, value)?;
        self.request()
    }
}

impl<N> SharedMemoryTransport<'_, N> {
    fn config_offset(&self, offset: usize, size: usize) -> Result<usize> {
        let len = (self.region.read_u32(layout::CONFIG_LEN)? as usize).min(layout::CONFIG_MAX);
        match offset.checked_add(size) {
            Some(end) if end <= len => Ok(layout::CONFIG + offset),
            _ => Err(Error::ConfigOutOfRange),
        }
    }
}

/// What a batch of client requests changed, for the I/O server to act on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelEvents {
    /// The client reset the device: drop every queue and in-flight request.
    pub reset: bool,
    /// Features were accepted (FEATURES_OK now set).
    pub features_accepted: bool,
    /// The client asked for features the device does not offer; FEATURES_OK stays clear.
    pub features_rejected: bool,
    /// DRIVER_OK is now set: start serving.
    pub driver_ok: bool,
    /// The client set FAILED.
    pub failed: bool,
    /// Bit q: queue q was enabled and can be served.
    pub queues_enabled: u32,
    /// A request arrived without a status change (e.g. a configuration write).
    pub other: bool,
}

/// A validated queue, as the client described it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct QueueConfig {
    size: u16,
    desc: usize,
    driver: usize,
    device: usize,
}

/// The server (device) end of a channel.
#[derive(Debug)]
pub struct SharedMemoryDevice<'a, N> {
    region: DmaRegion<'a>,
    rings: DmaRegion<'a>,
    data: DmaRegion<'a>,
    data_offset: usize,
    notifier: N,
    offered: Features,
    negotiated: Features,
    status: u8,
    answered: u32,
    num_queues: u16,
    max_queue_size: u16,
    config_len: usize,
    queues: [Option<QueueConfig>; MAX_QUEUES],
}

/// What the server offers on a channel.
#[derive(Debug, Clone, Copy)]
pub struct DeviceDescription<'c> {
    /// VirtIO device type (§5).
    pub device_type: u32,
    /// Offered features; VERSION_1 is always added.
    pub features: Features,
    /// Number of queues, at most [`MAX_QUEUES`].
    pub num_queues: u16,
    /// Largest queue size.
    pub max_queue_size: u16,
    /// Initial configuration space.
    pub config: &'c [u8],
}

impl<'a, N: Notifier> SharedMemoryDevice<'a, N> {
    /// Lays out a fresh channel in `region`: control block, `ring_len` bytes of ring area, and
    /// the rest as data area.
    pub fn new(
        region: DmaRegion<'a>,
        ring_len: usize,
        description: &DeviceDescription<'_>,
        notifier: N,
    ) -> Result<Self> {
        if usize::from(description.num_queues) > MAX_QUEUES
            || description.config.len() > layout::CONFIG_MAX
        {
            return Err(Error::OutOfBounds);
        }
        let ring_offset = layout::CONTROL_BLOCK_SIZE;
        let data_offset = (ring_offset + ring_len).next_multiple_of(4096);
        let data_len = region
            .len()
            .checked_sub(data_offset)
            .ok_or(Error::OutOfBounds)?;
        region.fill(0, layout::CONTROL_BLOCK_SIZE, 0)?;
        let offered = description.features.with(bits::VERSION_1);
        region.write_u32(layout::VERSION, LAYOUT_VERSION)?;
        region.write_u32(layout::DEVICE_TYPE, description.device_type)?;
        region.write_u16(layout::NUM_QUEUES, description.num_queues)?;
        region.write_u16(layout::MAX_QUEUE_SIZE, description.max_queue_size)?;
        region.write_u64(layout::DEVICE_FEATURES, offered.0)?;
        region.write_u64(layout::RING_AREA_OFFSET, ring_offset as u64)?;
        region.write_u64(layout::RING_AREA_LEN, ring_len as u64)?;
        region.write_u64(layout::DATA_AREA_OFFSET, data_offset as u64)?;
        region.write_u64(layout::DATA_AREA_LEN, data_len as u64)?;
        region.write_u32(layout::CONFIG_LEN, description.config.len() as u32)?;
        region.write_bytes(layout::CONFIG, description.config)?;
        for queue in 0..description.num_queues {
            region.write_u16(
                queue_entry(queue, layout::Q_MAX_SIZE),
                description.max_queue_size,
            )?;
        }
        // The magic goes last: a client that sees it sees a complete control block.
        barrier::publish();
        region.write_u32(layout::MAGIC, MAGIC)?;
        Ok(Self {
            rings: region.subregion(ring_offset, ring_len)?.rebased(0),
            data: region.subregion(data_offset, data_len)?.rebased(0),
            data_offset,
            region,
            notifier,
            offered,
            negotiated: Features(0),
            status: 0,
            answered: 0,
            num_queues: description.num_queues,
            max_queue_size: description.max_queue_size,
            config_len: description.config.len(),
            queues: [None; MAX_QUEUES],
        })
    }

    /// The features the client accepted (valid once FEATURES_OK was granted).
    pub fn negotiated(&self) -> Features {
        self.negotiated
    }

    /// The device status as the server last accepted it.
    pub fn status(&self) -> u8 {
        self.status
    }

    /// The notifier, e.g. to wait for kicks.
    pub fn notifier(&mut self) -> &mut N {
        &mut self.notifier
    }

    /// The client's data area: the only memory its buffers can name.
    pub fn data_area(&self) -> GrantedArea<'a> {
        GrantedArea::new(self.data)
    }

    /// Where the data area starts in the region (the server's own layout, never read back
    /// from shared memory).
    pub fn data_offset(&self) -> usize {
        self.data_offset
    }

    /// Whether the client has a request waiting that resets the device (status 0 while it is
    /// not reset): a server that still has work of this client's on a real device can finish
    /// it before [`SharedMemoryDevice::process_requests`] answers, since after a reset the
    /// device must not touch the driver's buffers (§2.4). Only a hint: read from shared memory
    /// once, and `process_requests` validates the request itself.
    pub fn reset_pending(&self) -> Result<bool> {
        let sequence = self.region.read_u32(layout::REQUEST_SEQ)?;
        if sequence == self.answered || self.status == 0 {
            return Ok(false);
        }
        barrier::observe();
        Ok(self.region.read_u32(layout::DRIVER_STATUS)? as u8 == 0)
    }

    /// Answers the client's pending request, if any: reset, status and feature handshake,
    /// queue enables. Everything the client wrote is read once and validated.
    pub fn process_requests(&mut self) -> Result<ChannelEvents> {
        let mut events = ChannelEvents::default();
        let sequence = self.region.read_u32(layout::REQUEST_SEQ)?;
        if sequence == self.answered {
            return Ok(events);
        }
        // Pairs with the client's barrier before it bumps REQUEST_SEQ.
        barrier::observe();
        let requested = self.region.read_u32(layout::DRIVER_STATUS)? as u8;
        if requested == 0 {
            if self.status != 0 {
                self.reset()?;
                events.reset = true;
            }
        } else if self.status & status::DEVICE_NEEDS_RESET == 0 {
            self.apply_status(requested, &mut events)?;
        }
        if self.status & (status::FEATURES_OK | status::DRIVER_OK | status::DEVICE_NEEDS_RESET)
            == status::FEATURES_OK
        {
            self.enable_queues(&mut events)?;
        }
        events.other = events == ChannelEvents::default();
        self.region
            .write_u32(layout::DEVICE_STATUS, u32::from(self.status))?;
        // §3.1.1 step 6 over shared memory: the answer is visible before the acknowledgement.
        barrier::publish();
        self.region.write_u32(layout::ACK_SEQ, sequence)?;
        self.answered = sequence;
        self.notifier.notify_peer();
        Ok(events)
    }

    fn reset(&mut self) -> Result<()> {
        // §2.4: after a reset the device holds no queues and no negotiated features.
        for queue in 0..self.num_queues {
            self.region
                .write_u16(queue_entry(queue, layout::Q_READY), 0)?;
        }
        self.queues = [None; MAX_QUEUES];
        self.negotiated = Features(0);
        self.status = 0;
        self.region.swap_u32(layout::KICKS, 0)?;
        Ok(())
    }

    fn apply_status(&mut self, requested: u8, events: &mut ChannelEvents) -> Result<()> {
        if requested & status::FAILED != 0 && self.status & status::FAILED == 0 {
            self.status |= status::FAILED;
            events.failed = true;
        }
        self.status |= requested & (status::ACKNOWLEDGE | status::DRIVER);
        if requested & status::FEATURES_OK != 0 && self.status & status::FEATURES_OK == 0 {
            let wanted = Features(self.region.read_u64(layout::DRIVER_FEATURES)?);
            // §2.2.2 / §3.1.1: the device refuses a subset it did not offer by leaving
            // FEATURES_OK clear; this transport has no legacy mode, so VERSION_1 is required.
            if wanted.is_subset_of(self.offered) && wanted.has(bits::VERSION_1) {
                self.negotiated = wanted;
                self.status |= status::FEATURES_OK;
                events.features_accepted = true;
            } else {
                events.features_rejected = true;
            }
        }
        if requested & status::DRIVER_OK != 0
            && self.status & status::FEATURES_OK != 0
            && self.status & status::DRIVER_OK == 0
        {
            self.status |= status::DRIVER_OK;
            events.driver_ok = true;
        }
        Ok(())
    }

    fn enable_queues(&mut self, events: &mut ChannelEvents) -> Result<()> {
        for queue in 0..self.num_queues {
            if self.queues[usize::from(queue)].is_some()
                || self.region.read_u16(queue_entry(queue, layout::Q_ENABLE))? != 1
            {
                continue;
            }
            if let Ok(config) = self.validate_queue(queue) {
                self.queues[usize::from(queue)] = Some(config);
                self.region
                    .write_u16(queue_entry(queue, layout::Q_READY), 1)?;
                events.queues_enabled |= 1 << queue;
            }
        }
        Ok(())
    }

    fn validate_queue(&self, queue: u16) -> Result<QueueConfig> {
        let size = self.region.read_u16(queue_entry(queue, layout::Q_SIZE))?;
        // The server's own limits, never the copies in shared memory the client can overwrite.
        if size == 0 || size > self.max_queue_size {
            return Err(Error::BadQueueSize);
        }
        let offset = |field| -> Result<usize> {
            usize::try_from(self.region.read_u64(queue_entry(queue, field))?)
                .map_err(|_| Error::OutOfBounds)
        };
        let config = QueueConfig {
            size,
            desc: offset(layout::Q_DESC)?,
            driver: offset(layout::Q_DRIVER)?,
            device: offset(layout::Q_DEVICE)?,
        };
        // Check the layout now so a bad queue is refused at enable time, not on first use.
        if self.negotiated.has(bits::RING_PACKED) {
            self.packed_layout(&config)?;
        } else {
            self.split_layout(&config)?;
        }
        Ok(config)
    }

    fn split_layout(&self, config: &QueueConfig) -> Result<SplitLayout> {
        let layout =
            SplitLayout::from_offsets(config.size, config.desc, config.driver, config.device)?;
        self.rings.subregion(0, layout.total())?;
        Ok(layout)
    }

    fn packed_layout(&self, config: &QueueConfig) -> Result<PackedLayout> {
        let layout =
            PackedLayout::from_offsets(config.size, config.desc, config.driver, config.device)?;
        self.rings.subregion(0, layout.total())?;
        Ok(layout)
    }

    fn queue_config(&self, queue: u16) -> Result<QueueConfig> {
        self.queues
            .get(usize::from(queue))
            .copied()
            .flatten()
            .ok_or(Error::QueueUnavailable)
    }

    /// The device side of enabled split queue `queue`.
    pub fn split_queue(&self, queue: u16) -> Result<SplitDeviceQueue<'a>> {
        let config = self.queue_config(queue)?;
        if self.negotiated.has(bits::RING_PACKED) {
            return Err(Error::QueueUnavailable);
        }
        SplitDeviceQueue::new(
            self.rings,
            self.split_layout(&config)?,
            self.data_area(),
            self.negotiated,
        )
    }

    /// The device side of enabled packed queue `queue`.
    pub fn packed_queue(&self, queue: u16) -> Result<PackedDeviceQueue<'a>> {
        let config = self.queue_config(queue)?;
        if !self.negotiated.has(bits::RING_PACKED) {
            return Err(Error::QueueUnavailable);
        }
        PackedDeviceQueue::new(
            self.rings,
            self.packed_layout(&config)?,
            self.data_area(),
            self.negotiated,
        )
    }

    /// Declares the channel broken until the client resets it, e.g. after a queue error
    /// caused by the client (§2.1.2: set DEVICE_NEEDS_RESET and send a configuration change
    /// notification). Requests other than a reset are ignored until then.
    pub fn set_needs_reset(&mut self) -> Result<()> {
        self.status |= status::DEVICE_NEEDS_RESET;
        self.queues = [None; MAX_QUEUES];
        self.region
            .write_u32(layout::DEVICE_STATUS, u32::from(self.status))?;
        barrier::publish();
        self.region
            .fetch_or_u32(layout::INTERRUPTS, INTERRUPT_CONFIG)?;
        self.notifier.notify_peer();
        Ok(())
    }

    /// Takes the pending available buffer notifications: bit q for queue q.
    pub fn take_kicks(&mut self) -> Result<u32> {
        self.region.swap_u32(layout::KICKS, 0)
    }

    /// Sends a used buffer notification for `queue`.
    pub fn interrupt(&mut self, queue: u16) -> Result<()> {
        if queue >= self.num_queues {
            return Err(Error::QueueUnavailable);
        }
        self.region.fetch_or_u32(layout::INTERRUPTS, 1 << queue)?;
        self.notifier.notify_peer();
        Ok(())
    }

    /// Replaces configuration bytes at `offset` and tells the client (§2.5: the generation
    /// changes whenever the configuration may have).
    pub fn update_config(&mut self, offset: usize, bytes: &[u8]) -> Result<()> {
        if offset
            .checked_add(bytes.len())
            .is_none_or(|end| end > self.config_len)
        {
            return Err(Error::ConfigOutOfRange);
        }
        let generation = self
            .region
            .read_u32(layout::CONFIG_GENERATION)?
            .wrapping_add(1);
        self.region
            .write_u32(layout::CONFIG_GENERATION, generation)?;
        barrier::publish();
        self.region.write_bytes(layout::CONFIG + offset, bytes)?;
        barrier::publish();
        self.region
            .write_u32(layout::CONFIG_GENERATION, generation.wrapping_add(1))?;
        self.region
            .fetch_or_u32(layout::INTERRUPTS, INTERRUPT_CONFIG)?;
        self.notifier.notify_peer();
        Ok(())
    }
}
