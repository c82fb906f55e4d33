//! The real NIC behind the switch: the [`Uplink`] trait the engine drives, and
//! [`VirtioUplink`], a virtio-net driver (§5.1) over any [`Transport`] (PCI modern or legacy on
//! x86_64, MMIO on aarch64; the host tests use the inter-partition transport with a simulated
//! network behind it).
//!
//! The driver owns fixed packet buffers in memory the device can reach (the server's DMA
//! region): received frames are copied out of them, frames to send are copied into them, so
//! the NIC never sees client memory and a client cannot change a frame after the switch
//! checked it.

use ioserver::DeviceInterrupts;
use virtio::devices::net;
use virtio::dma::DmaRegion;
use virtio::features::{Features, bits};
use virtio::queue::{Buffer, DriverQueue, Outstanding};
use virtio::split::SplitQueue;
use virtio::transport::{Transport, initialize, read_config};

use crate::switch::{MAX_FRAME, Mac};

/// Why the uplink did not take a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UplinkError {
    /// No free transmit buffer now (the frame is dropped; TCP retransmits).
    Busy,
    /// The NIC broke the ring protocol or the frame cannot be sent.
    Failed,
}

/// The network side of the switch.
pub trait Uplink: DeviceInterrupts {
    /// The NIC's own MAC address (informational; clients use their own).
    fn mac(&self) -> Mac;
    /// Queues `frame` (a whole Ethernet frame, no virtio header) for sending.
    fn transmit(&mut self, frame: &[u8]) -> Result<(), UplinkError>;
    /// Takes one received frame into `out`; returns its length.
    fn receive(&mut self, out: &mut [u8; MAX_FRAME]) -> Option<usize>;
    /// Tells the NIC about frames queued and buffers returned since the last call.
    fn flush(&mut self);
}

/// Bytes per packet buffer: header at +0, frame at +[`FRAME_AT`].
const BUFFER: usize = 2048;
const FRAME_AT: usize = 16;
/// Most receive (and transmit) buffers.
pub const MAX_BUFFERS: usize = 128;

/// Counters of the uplink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UplinkStats {
    /// Frames handed to the NIC.
    pub tx_frames: u64,
    /// Frames received from the NIC.
    pub rx_frames: u64,
    /// Received buffers with a length that is no frame (shorter than the header, or longer
    /// than a frame): dropped.
    pub rx_bad: u64,
}

/// The features the server drives the real NIC with: its MAC and link status (§5.1.3).
pub fn uplink_features() -> Features {
    Features::from_bits(&[net::features::MAC, net::features::STATUS, bits::EVENT_IDX])
}

/// A virtio-net NIC with one receive and one transmit split queue of `Q` entries.
#[derive(Debug)]
pub struct VirtioUplink<'a, T, const Q: usize> {
    transport: T,
    rx: SplitQueue<'a, Q>,
    tx: SplitQueue<'a, Q>,
    memory: DmaRegion<'a>,
    buffers: usize,
    header_len: usize,
    /// Which packet buffer each chain on the receive queue is.
    rx_posted: Outstanding<Q>,
    /// Which packet buffer each chain on the transmit queue is.
    tx_posted: Outstanding<Q>,
    tx_free: u128,
    rx_pending_kick: bool,
    tx_pending_kick: bool,
    mac: Mac,
    features: Features,
    stats: UplinkStats,
}

impl<'a, T: Transport, const Q: usize> VirtioUplink<'a, T, Q> {
    /// Initialises the NIC (§3.1.1, §5.1.5; or §3.1.2 for a legacy interface) with its
    /// receive queue in `rx_ring` and transmit queue in `tx_ring`, and packet buffers in
    /// `memory` (split evenly between receiving and sending). `after_enable` runs once the
    /// queues are enabled, before DRIVER_OK (e.g. to route MSI-X vectors).
    pub fn new(
        mut transport: T,
        rx_ring: DmaRegion<'a>,
        tx_ring: DmaRegion<'a>,
        memory: DmaRegion<'a>,
        after_enable: impl FnOnce(&mut T) -> virtio::Result<()>,
    ) -> virtio::Result<Self> {
        let buffers = (memory.len() / BUFFER / 2).min(MAX_BUFFERS).min(Q);
        if buffers == 0 {
            return Err(virtio::Error::OutOfBounds);
        }
        let mut queues = None;
        let features = initialize(&mut transport, uplink_features(), |t, negotiated| {
            let legacy = t.is_legacy();
            let rx = SplitQueue::<Q>::new(rx_ring, negotiated, legacy)?;
            let tx = SplitQueue::<Q>::new(tx_ring, negotiated, legacy)?;
            t.enable_queue(net::queue::RX, rx.size(), rx.addresses())?;
            t.enable_queue(net::queue::TX, tx.size(), tx.addresses())?;
            queues = Some((rx, tx));
            after_enable(t)
        })?;
        let (rx, mut tx) = queues.ok_or(virtio::Error::QueueUnavailable)?;
        // Transmit buffers are reaped on every pass: no interrupts for them.
        tx.disable_interrupts()?;
        // §5.1.6: with VERSION_1 (or MRG_RXBUF) the header is 12 bytes; a legacy device
        // without MRG_RXBUF uses the 10-byte header without `num_buffers`.
        let header_len = if features.has(bits::VERSION_1) {
            net::Header::SIZE
        } else {
            net::Header::SIZE - 2
        };
        let mut mac = [0u8; 6];
        if features.has(net::features::MAC) {
            read_config(&mut transport, net::config::MAC, &mut mac)?;
        }
        let mut uplink = Self {
            transport,
            rx,
            tx,
            memory,
            buffers,
            header_len,
            rx_posted: Outstanding::new(),
            tx_posted: Outstanding::new(),
            tx_free: if buffers >= 128 {
                u128::MAX
            } else {
                (1u128 << buffers) - 1
            },
            rx_pending_kick: false,
            tx_pending_kick: false,
            mac,
            features,
            stats: UplinkStats::default(),
        };
        for slot in 0..buffers {
            uplink.post_rx(slot)?;
        }
        uplink.flush();
        Ok(uplink)
    }

    /// The negotiated features.
    pub fn features(&self) -> Features {
        self.features
    }

    /// Whether the link is up (§5.1.4: without STATUS the link is assumed up).
    pub fn link_up(&mut self) -> bool {
        if !self.features.has(net::features::STATUS) {
            return true;
        }
        let mut status = [0u8; 2];
        read_config(&mut self.transport, net::config::STATUS, &mut status).is_ok()
            && u16::from_le_bytes(status) & net::link_status::LINK_UP != 0
    }

    /// Receive (and transmit) buffers.
    pub fn buffers(&self) -> usize {
        self.buffers
    }

    /// Counters.
    pub fn stats(&self) -> UplinkStats {
        self.stats
    }

    /// The transport.
    pub fn transport(&mut self) -> &mut T {
        &mut self.transport
    }

    fn at(&self, slot: usize) -> usize {
        slot * BUFFER
    }

    fn tx_at(&self, slot: usize) -> usize {
        (self.buffers + slot) * BUFFER
    }

    /// Hands receive buffer `slot` to the NIC: header and frame as two device-writable
    /// descriptors (§5.1.6.3; a legacy device without ANY_LAYOUT wants them apart).
    fn post_rx(&mut self, slot: usize) -> virtio::Result<()> {
        let at = self.at(slot);
        let header = Buffer {
            addr: self.memory.bus_address(at),
            len: self.header_len as u32,
        };
        let frame = Buffer {
            addr: self.memory.bus_address(at + FRAME_AT),
            len: MAX_FRAME as u32,
        };
        self.rx_posted
            .submit(&mut self.rx, slot, &[], &[header, frame])?;
        self.rx_pending_kick = true;
        Ok(())
    }

    /// Takes back transmit buffers the NIC is done with.
    fn reap_tx(&mut self) {
        while let Some((slot, _)) = self.tx_posted.next(&mut self.tx) {
            self.tx_free |= 1u128 << slot;
        }
    }

    /// Whether the NIC broke the ring protocol on either queue: then it is not trusted with
    /// anything more.
    fn broken(&self) -> bool {
        self.rx_posted.is_broken() || self.tx_posted.is_broken()
    }
}

impl<T: Transport, const Q: usize> Uplink for VirtioUplink<'_, T, Q> {
    fn mac(&self) -> Mac {
        self.mac
    }

    fn transmit(&mut self, frame: &[u8]) -> Result<(), UplinkError> {
        if self.broken() || frame.len() > MAX_FRAME {
            return Err(UplinkError::Failed);
        }
        if self.tx_free == 0 {
            self.reap_tx();
        }
        if self.tx_free == 0 {
            return Err(UplinkError::Busy);
        }
        let slot = self.tx_free.trailing_zeros() as usize;
        let at = self.tx_at(slot);
        // §5.1.6.2: no offloads negotiated: flags 0, gso_type NONE.
        let header = net::Header::default().to_bytes();
        self.memory
            .write_bytes(at, &header[..self.header_len])
            .and_then(|()| self.memory.write_bytes(at + FRAME_AT, frame))
            .map_err(|_| UplinkError::Failed)?;
        let readable = [
            Buffer {
                addr: self.memory.bus_address(at),
                len: self.header_len as u32,
            },
            Buffer {
                addr: self.memory.bus_address(at + FRAME_AT),
                len: frame.len() as u32,
            },
        ];
        match self.tx_posted.submit(&mut self.tx, slot, &readable, &[]) {
            Ok(_) => {}
            Err(virtio::Error::QueueFull) => return Err(UplinkError::Busy),
            Err(_) => return Err(UplinkError::Failed),
        }
        self.tx_free &= !(1u128 << slot);
        self.tx_pending_kick = true;
        self.stats.tx_frames += 1;
        Ok(())
    }

    fn receive(&mut self, out: &mut [u8; MAX_FRAME]) -> Option<usize> {
        loop {
            // A NIC that broke either ring is not trusted with anything more.
            if self.broken() {
                return None;
            }
            let (slot, completion) = self.rx_posted.next(&mut self.rx)?;
            let len = (completion.written as usize).checked_sub(self.header_len);
            let copied = match len {
                Some(len) if len <= MAX_FRAME => self
                    .memory
                    .read_bytes(self.at(slot) + FRAME_AT, &mut out[..len])
                    .ok()
                    .map(|()| len),
                _ => None,
            };
            if self.post_rx(slot).is_err() {
                self.rx_posted.set_broken();
            }
            match copied {
                Some(len) => {
                    self.stats.rx_frames += 1;
                    return Some(len);
                }
                None => self.stats.rx_bad += 1,
            }
        }
    }

    fn flush(&mut self) {
        self.reap_tx();
        if core::mem::take(&mut self.rx_pending_kick) && matches!(self.rx.should_notify(), Ok(true))
        {
            let _ = self.transport.notify(net::queue::RX);
        }
        if core::mem::take(&mut self.tx_pending_kick) && matches!(self.tx.should_notify(), Ok(true))
        {
            let _ = self.transport.notify(net::queue::TX);
        }
    }
}

/// Only the receive queue interrupts: transmit buffers are reaped on every pass.
impl<T: Transport, const Q: usize> DeviceInterrupts for VirtioUplink<'_, T, Q> {
    fn ack_interrupt(&mut self) {
        self.transport.ack_interrupt();
    }

    fn suppress_interrupts(&mut self) {
        let _ = self.rx.disable_interrupts();
    }

    fn request_interrupt(&mut self) -> bool {
        self.rx.enable_interrupts().unwrap_or(true)
    }
}
