//! A virtio-net driver for client partitions, over Bulkhead's inter-partition VirtIO transport
//! (`bulkhead_virtio::transport::shmem`, served by `servers/net`).
//!
//! The client lays out its data area itself: `Q` receive buffers, then `Q` transmit buffers,
//! 2 KiB each (a 12-byte header, §5.1.6, then a frame of up to 1514 bytes). Every receive
//! buffer is posted at attach time and re-posted as soon as its frame has been copied out.
//!
//! - [`NetClient::receive`] copies the next received frame out (without its header);
//! - [`NetClient::transmit`] copies a frame into a free transmit buffer and sends it;
//! - with the `smoltcp` feature, [`SmolNic`] is a `smoltcp::phy::Device` over the driver.
//!
//! Restarts: when the server restarts it lays the channel out afresh (device status 0); when
//! it declares the channel broken it sets DEVICE_NEEDS_RESET (§2.1.2). Either way
//! [`NetClient::check_device`] reports it and the caller calls [`NetClient::reconnect`]:
//! frames in flight are lost, as on a link that went down.
#![no_std]
#![deny(unsafe_code)]

use virtio::devices::{id, net};
use virtio::dma::DmaRegion;
use virtio::features::{Features, bits};
use virtio::queue::{Buffer, DriverQueue, Token};
use virtio::transport::shmem::Notifier;
use virtio_session::{Class, Session};

#[cfg(feature = "smoltcp")]
mod smol;
#[cfg(feature = "smoltcp")]
pub use smol::SmolNic;

/// Header before each frame (VERSION_1: 12 bytes, §5.1.6).
pub const HEADER: usize = net::Header::SIZE;
/// Largest Ethernet frame (1500-byte MTU + 14-byte header, no FCS).
pub const MAX_FRAME: usize = 1514;
/// Bytes per buffer in the data area.
const BUFFER: usize = 2048;
const NO_SLOT: u16 = u16::MAX;

virtio_session::client_error! {
    /// Why the NIC or an operation failed.
    pub enum NetError {
        /// The channel is not a network device.
        wrong_device: NotNet,
        /// The data area cannot hold the buffers.
        TooSmall,
        /// No free transmit buffer now.
        Busy,
        /// The frame is empty or longer than [`MAX_FRAME`].
        BadFrame,
    }
    too_small => NetError::TooSmall,
    // The NIC never waits: a timeout can only come from the transport.
    timeout => NetError::Transport(virtio::Error::Timeout),
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Frames received.
    pub rx_frames: u64,
    /// Bytes received (frames, without headers).
    pub rx_bytes: u64,
    /// Frames sent.
    pub tx_frames: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
}

/// What the driver asks for (§5.1.3): the MAC, the link status, EVENT_IDX.
pub fn supported_features() -> Features {
    Features::from_bits(&[net::features::MAC, net::features::STATUS, bits::EVENT_IDX])
}

/// A virtio-net device over a shared-memory channel, with split queues of `Q` entries.
#[derive(Debug)]
pub struct NetClient<'a, N: Notifier + Clone, const Q: usize = 32> {
    session: Session<'a, N, Q, 2>,
    data: DmaRegion<'a>,
    mac: [u8; 6],
    rx_slot: [u16; Q],
    tx_slot: [u16; Q],
    tx_free: u64,
    buffers: usize,
    rx_kick: bool,
    stats: NetStats,
}

impl<'a, N: Notifier + Clone, const Q: usize> NetClient<'a, N, Q> {
    /// Attaches to the channel laid out in `region` and runs the initialisation of §3.1.1 and
    /// §5.1.5. [`NetError::NotReady`] means the server has not laid it out yet.
    pub fn attach(region: DmaRegion<'a>, notifier: N) -> Result<Self, NetError> {
        let class = Class {
            device_type: id::NET,
            features: supported_features(),
            data_bytes: 2 * Q.min(64) * BUFFER,
        };
        // The NIC never waits on the session: no bound needed.
        Self::on(Session::attach(region, notifier, class, 0)?)
    }

    /// The driver over a fresh session: every receive buffer posted, none in flight to send.
    fn on(mut session: Session<'a, N, Q, 2>) -> Result<Self, NetError> {
        // Transmit completions are reaped when a buffer is needed: no interrupts for them.
        session.queue(net::queue::TX)?.disable_interrupts()?;
        let mut mac = [0u8; 6];
        if session.features().has(net::features::MAC) {
            session.read_config(net::config::MAC, &mut mac)?;
        }
        let buffers = Q.min(64);
        let mut client = Self {
            data: session.data_area(),
            session,
            mac,
            rx_slot: [NO_SLOT; Q],
            tx_slot: [NO_SLOT; Q],
            tx_free: if buffers >= 64 {
                u64::MAX
            } else {
                (1u64 << buffers) - 1
            },
            buffers,
            rx_kick: false,
            stats: NetStats::default(),
        };
        for slot in 0..buffers {
            client.post_rx(slot)?;
        }
        client.kick_rx()?;
        Ok(client)
    }

    /// Attaches afresh after [`NetError::Reset`] or [`NetError::NeedsReset`].
    pub fn reconnect(&mut self) -> Result<(), NetError> {
        *self = Self::on(self.session.reattach()?)?;
        Ok(())
    }

    /// The MAC address the server gave this client.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Whether the link is up (§5.1.4).
    pub fn link_up(&mut self) -> bool {
        if !self.session.features().has(net::features::STATUS) {
            return true;
        }
        let mut s = [0u8; 2];
        self.session
            .read_config(net::config::STATUS, &mut s)
            .is_ok()
            && u16::from_le_bytes(s) & net::link_status::LINK_UP != 0
    }

    /// The negotiated features.
    pub fn features(&self) -> Features {
        self.session.features()
    }

    /// Counters.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// The notifier.
    pub fn notifier(&mut self) -> &mut N {
        self.session.notifier()
    }

    /// Whether the device is still live: [`NetError::Reset`] if the server laid the channel
    /// out again, [`NetError::NeedsReset`] if it declared it broken.
    pub fn check_device(&mut self) -> Result<(), NetError> {
        Ok(self.session.check_device()?)
    }

    /// Acknowledges interrupts (clears the interrupt word).
    pub fn ack_interrupt(&mut self) {
        self.session.ack_interrupt();
    }

    /// Asks for an interrupt on the next received frame, then re-checks: `true` if a frame is
    /// already there (poll again rather than sleep, §2.7.10).
    pub fn enable_interrupts(&mut self) -> Result<bool, NetError> {
        Ok(self.session.queue(net::queue::RX)?.enable_interrupts()?)
    }

    fn post_rx(&mut self, slot: usize) -> Result<(), NetError> {
        let buffer = Buffer {
            addr: self.data.bus_address(slot * BUFFER),
            len: (HEADER + MAX_FRAME) as u32,
        };
        let Token(token) = self.session.queue(net::queue::RX)?.submit(&[], &[buffer])?;
        *self
            .rx_slot
            .get_mut(usize::from(token))
            .ok_or(NetError::Transport(virtio::Error::BadUsedId))? = slot as u16;
        self.rx_kick = true;
        Ok(())
    }

    fn kick_rx(&mut self) -> Result<(), NetError> {
        if core::mem::take(&mut self.rx_kick) {
            self.session.kick(net::queue::RX)?;
        }
        Ok(())
    }

    /// Copies the next received frame into `out` and returns its length, or `None` if no
    /// frame is waiting. The buffer goes straight back to the server.
    pub fn receive(&mut self, out: &mut [u8]) -> Result<Option<usize>, NetError> {
        let Some(completion) = self.session.queue(net::queue::RX)?.poll_used()? else {
            self.check_device()?;
            return Ok(None);
        };
        let slot = self
            .rx_slot
            .get_mut(usize::from(completion.token.0))
            .map(|s| core::mem::replace(s, NO_SLOT))
            .filter(|&s| s != NO_SLOT)
            .ok_or(NetError::Transport(virtio::Error::BadUsedId))?;
        let slot = usize::from(slot);
        let len = (completion.written as usize).saturating_sub(HEADER);
        let n = len.min(out.len()).min(MAX_FRAME);
        self.data
            .read_bytes(slot * BUFFER + HEADER, &mut out[..n])?;
        self.post_rx(slot)?;
        self.kick_rx()?;
        self.stats.rx_frames += 1;
        self.stats.rx_bytes += n as u64;
        Ok(Some(n))
    }

    fn reap_tx(&mut self) -> Result<(), NetError> {
        while let Some(c) = self.session.queue(net::queue::TX)?.poll_used()? {
            if let Some(entry) = self.tx_slot.get_mut(usize::from(c.token.0)) {
                let slot = core::mem::replace(entry, NO_SLOT);
                if slot != NO_SLOT {
                    self.tx_free |= 1 << slot;
                }
            }
        }
        Ok(())
    }

    /// Whether a transmit buffer is free (reaping finished ones first).
    pub fn can_transmit(&mut self) -> bool {
        if self.tx_free == 0 {
            let _ = self.reap_tx();
        }
        self.tx_free != 0
    }

    /// Sends `frame` (a whole Ethernet frame; its source must be [`NetClient::mac`] or the
    /// server drops it). [`NetError::Busy`] when every transmit buffer is in flight.
    pub fn transmit(&mut self, frame: &[u8]) -> Result<(), NetError> {
        if frame.is_empty() || frame.len() > MAX_FRAME {
            return Err(NetError::BadFrame);
        }
        self.transmit_with(frame.len(), |buf| buf.copy_from_slice(frame))
    }

    /// Sends a frame of `len` bytes that `fill` writes into a buffer.
    pub fn transmit_with(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), NetError> {
        if len == 0 || len > MAX_FRAME {
            return Err(NetError::BadFrame);
        }
        if !self.can_transmit() {
            return Err(NetError::Busy);
        }
        let slot = self.tx_free.trailing_zeros() as usize;
        let at = (self.buffers + slot) * BUFFER;
        let mut buf = [0u8; HEADER + MAX_FRAME];
        // §5.1.6.2: no offloads: flags 0, gso_type NONE; num_buffers is unused on transmit.
        buf[..HEADER].copy_from_slice(&net::Header::default().to_bytes());
        fill(&mut buf[HEADER..HEADER + len]);
        self.data.write_bytes(at, &buf[..HEADER + len])?;
        let Token(token) = self.session.queue(net::queue::TX)?.submit(
            &[Buffer {
                addr: self.data.bus_address(at),
                len: (HEADER + len) as u32,
            }],
            &[],
        )?;
        *self
            .tx_slot
            .get_mut(usize::from(token))
            .ok_or(NetError::Transport(virtio::Error::BadUsedId))? = slot as u16;
        self.tx_free &= !(1 << slot);
        self.session.kick(net::queue::TX)?;
        self.stats.tx_frames += 1;
        self.stats.tx_bytes += len as u64;
        Ok(())
    }
}
