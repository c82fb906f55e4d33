//! The network class: each client's virtio-net queues (§5.1.2: receiveq1 = 0, transmitq1 = 1)
//! on one side, the [`Uplink`] on the other, the [`Switch`] between them, on the I/O-server
//! framework.
//!
//! In its turn of a pass a serving client has up to [`TX_BUDGET`] frames taken from its
//! transmit queue: each is validated, its buffer returned, and it is forwarded where the
//! switch says, into other clients' receive queues within the same turn or to the uplink. After
//! the turns, up to [`RX_BUDGET`] frames the uplink received are forwarded, and the uplink is
//! told about frames queued and buffers returned.
//!
//! A frame is delivered to a client by copying it, behind a 12-byte header
//! (`num_buffers` = 1, §5.1.6.4), into the next buffer of the client's receive queue (taken
//! when a frame arrives: its kicks are off). A client with no receive buffer posted loses the
//! frame (counted), as on a real NIC.
//!
//! Errors, per client: a transmitted frame that breaks the frame rules (no room for the
//! header, shorter than an Ethernet header, longer than 1514 bytes, offloads that were not
//! negotiated, device-writable buffers) or the MAC policy (a source that is not the client's
//! MAC) is dropped, counted, and its buffer returned: the client goes on. A chain that breaks
//! the virtqueue rules, or a receive buffer too small for a full frame or with device-readable
//! parts, stops service to that client (DEVICE_NEEDS_RESET, §2.1.2) until it resets; the other
//! clients and the uplink are not affected.

use core::fmt;

use ioserver::chain::{read_readable, write_writable};
use ioserver::{
    Clients, DeviceClass, DeviceInterrupts, MAX_CONFIG, Progress, Ready, Settings, Turn, Visit,
    ring_features,
};
use virtio::devices::{id, net};
use virtio::features::Features;
use virtio::queue::{Chain, GrantedArea};
use virtio::transport::shmem::Notifier;

use crate::switch::{
    FrameError, MAX_FRAME, Mac, MacDisplay, Port, Switch, SwitchError, Targets, parse_mac,
};
use crate::uplink::{Uplink, UplinkError};

/// Header in front of every frame on client queues (VERSION_1 is always negotiated here).
pub const HEADER: usize = net::Header::SIZE;
/// Smallest receive buffer a client must post: header and a full frame (§5.1.6.3.1: without
/// MRG_RXBUF and GUEST_TSO the driver SHOULD post buffers of at least 1526 bytes; this server
/// makes it a MUST).
pub const MIN_RX_BUFFER: u64 = (HEADER + MAX_FRAME) as u64;
/// Largest queue size offered to a client.
pub const MAX_CLIENT_QUEUE: u16 = 256;
/// Frames taken from one client's transmit queue per turn (fairness between clients).
pub const TX_BUDGET: usize = 32;
/// Frames taken from the uplink per pass.
pub const RX_BUDGET: usize = 64;

/// The network class's own reason to stop serving a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetRule {
    /// A receive buffer with device-readable parts or too small for a full frame.
    BadRxBuffer,
}

/// The network counters per client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Frames the client sent that were forwarded.
    pub tx_frames: u64,
    /// Their bytes (Ethernet frames, without the virtio header).
    pub tx_bytes: u64,
    /// Frames delivered to the client.
    pub rx_frames: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Frames dropped because their source MAC was not the client's.
    pub spoofed: u64,
    /// Transmit chains that broke the frame rules (dropped, buffer returned).
    pub malformed: u64,
    /// Frames for the client lost because it had no receive buffer posted.
    pub rx_no_buffer: u64,
}

/// Counters of the switch as a whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SwitchStats {
    /// Frames the uplink received.
    pub uplink_rx: u64,
    /// Frames sent to the uplink.
    pub uplink_tx: u64,
    /// Frames for the uplink lost because it had no free buffer.
    pub uplink_busy: u64,
    /// Uplink frames refused (malformed, spoofed client source, multicast source).
    pub uplink_refused: u64,
    /// Uplink unicast frames for no client.
    pub unknown_destination: u64,
}

/// Why a client is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its channel has no valid `mac`.
    NoMac,
    /// The switch refuses its MAC.
    Mac(SwitchError),
}

/// A client's port on the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtualNic {
    /// Its address, from the description.
    pub mac: Mac,
}

/// Why the server stopped serving a client until it resets the device.
pub type Broken = ioserver::Broken<NetRule>;
/// Where a client stands.
pub type ClientState = ioserver::ClientState<NetRule>;
/// A client's counters.
pub type ClientStats = ioserver::ClientStats<NetStats>;

/// The features offered to clients: their MAC and link status (§5.1.3), and the ring
/// features the library serves (§6). No offloads: every frame is a plain Ethernet frame.
pub fn client_features() -> Features {
    ring_features()
        .with(net::features::MAC)
        .with(net::features::STATUS)
}

/// The configuration space a client sees (§5.1.4): its MAC and status LINK_UP.
pub fn client_config(mac: Mac) -> [u8; 8] {
    let mut config = [0u8; 8];
    config[net::config::MAC..net::config::MAC + 6].copy_from_slice(&mac);
    config[net::config::STATUS..net::config::STATUS + 2]
        .copy_from_slice(&net::link_status::LINK_UP.to_le_bytes());
    config
}

/// The network class: the switch and the uplink behind it.
#[derive(Debug)]
pub struct Network<U> {
    uplink: U,
    switch: Switch,
    stats: SwitchStats,
    queue_size: u16,
}

/// The network server.
pub type Server<'a, U, N> = ioserver::Server<'a, N, Network<U>>;

impl<U: Uplink> Network<U> {
    /// The class over `uplink`, offering clients queues of up to `queue_size` entries.
    pub fn new(uplink: U, queue_size: u16) -> Self {
        Self {
            uplink,
            switch: Switch::new(),
            stats: SwitchStats::default(),
            queue_size: queue_size.clamp(1, MAX_CLIENT_QUEUE),
        }
    }

    /// The uplink.
    pub fn uplink(&mut self) -> &mut U {
        &mut self.uplink
    }

    /// Switch-wide counters.
    pub fn stats(&self) -> SwitchStats {
        self.stats
    }

    /// Takes one chain from client `index`'s transmit queue and returns its buffer. `None`:
    /// nothing to take; `Some(None)`: a chain was consumed but carried no forwardable frame;
    /// `Some(Some(len))`: a valid frame of `len` bytes is in `frame`.
    fn take_tx<N: Notifier>(
        &mut self,
        clients: &mut Clients<'_, N, Self>,
        index: usize,
        frame: &mut [u8; MAX_FRAME],
    ) -> Option<Option<usize>> {
        let channel = clients.get_mut(index)?;
        let chain = match channel.queue(net::queue::TX)?.next_chain() {
            Ok(Some(chain)) => chain,
            Ok(None) => return None,
            Err(e) => {
                self.break_client(clients, index, Broken::Queue(e));
                return Some(None);
            }
        };
        let valid = read_tx_frame(&chain, channel.area(), frame);
        // §5.1.6.2: transmit buffers are returned with nothing written.
        if let Err(e) = channel.push(net::queue::TX, &chain, 0) {
            self.break_client(clients, index, Broken::Completion(e));
            return Some(None);
        }
        if valid.is_err() {
            channel.stats_mut().malformed += 1;
        }
        Some(valid.ok())
    }

    /// Sends `frame` from `from` wherever the switch says.
    fn forward<N: Notifier>(
        &mut self,
        clients: &mut Clients<'_, N, Self>,
        from: Port,
        frame: &[u8],
    ) {
        let targets = match self.switch.route(from, frame) {
            Ok(t) => t,
            Err(e) => {
                match from {
                    Port::Client(n) => {
                        if let Some(c) = clients.get_mut(n) {
                            let stats = c.stats_mut();
                            match e {
                                FrameError::SpoofedSource | FrameError::MulticastSource => {
                                    stats.spoofed += 1
                                }
                                _ => stats.malformed += 1,
                            }
                        }
                    }
                    Port::Uplink => self.stats.uplink_refused += 1,
                }
                return;
            }
        };
        if let Port::Client(n) = from
            && let Some(c) = clients.get_mut(n)
        {
            let stats = c.stats_mut();
            stats.tx_frames += 1;
            stats.tx_bytes += frame.len() as u64;
        }
        if from == Port::Uplink && targets == Targets::default() {
            self.stats.unknown_destination += 1;
        }
        if targets.uplink {
            match self.uplink.transmit(frame) {
                Ok(()) => self.stats.uplink_tx += 1,
                Err(UplinkError::Busy | UplinkError::Failed) => self.stats.uplink_busy += 1,
            }
        }
        for index in 0..ioserver::MAX_CLIENTS {
            if targets.clients & (1 << index) != 0 {
                self.deliver(clients, index, frame);
            }
        }
    }

    /// Copies `frame` into client `index`'s next receive buffer.
    fn deliver<N: Notifier>(
        &mut self,
        clients: &mut Clients<'_, N, Self>,
        index: usize,
        frame: &[u8],
    ) {
        let Some(channel) = clients.get_mut(index) else {
            return;
        };
        let Some(rx) = channel.queue(net::queue::RX) else {
            return;
        };
        let chain = match rx.queue().pop() {
            Ok(Some(chain)) => chain,
            Ok(None) => {
                channel.stats_mut().rx_no_buffer += 1;
                return;
            }
            Err(e) => return self.break_client(clients, index, Broken::Queue(e)),
        };
        if chain.readable_len() != 0 || chain.writable_len() < MIN_RX_BUFFER {
            return self.break_client(clients, index, Broken::Class(NetRule::BadRxBuffer));
        }
        // §5.1.6.4: flags 0 (no checksum offload negotiated), gso NONE, num_buffers 1.
        let header = net::Header {
            num_buffers: 1,
            ..net::Header::default()
        }
        .to_bytes();
        let area = channel.area();
        let written = write_writable(&chain, area, 0, &header)
            .and_then(|()| write_writable(&chain, area, HEADER as u64, frame));
        let len = (HEADER + frame.len()) as u32;
        match written.and_then(|()| channel.push(net::queue::RX, &chain, len)) {
            Ok(()) => {
                let stats = channel.stats_mut();
                stats.rx_frames += 1;
                stats.rx_bytes += frame.len() as u64;
            }
            Err(e) => self.break_client(clients, index, Broken::Completion(e)),
        }
    }
}

impl<U: Uplink> DeviceClass for Network<U> {
    const DEVICE_TYPE: u32 = id::NET;
    const QUEUES: u16 = 2;
    const READY: Ready = Ready::All(1 << net::queue::RX | 1 << net::queue::TX);
    type Spec = Mac;
    type Refusal = Refusal;
    type Client = VirtualNic;
    type Stats = NetStats;
    type Reason = NetRule;
    /// Receive buffers are taken when a frame arrives: no kicks needed for them.
    const NO_KICKS: u32 = 1 << net::queue::RX;

    /// `mac`: the client's address (required).
    fn spec(&self, config: &dyn Settings) -> Result<Mac, Refusal> {
        config.text("mac").and_then(parse_mac).ok_or(Refusal::NoMac)
    }

    fn describe(nic: &VirtualNic, out: &mut dyn fmt::Write) -> fmt::Result {
        write!(out, "virtual NIC with MAC {}", MacDisplay(nic.mac))
    }

    fn offer(&self, mac: &Mac, config: &mut [u8; MAX_CONFIG]) -> (Features, usize) {
        let space = client_config(*mac);
        config[..space.len()].copy_from_slice(&space);
        (client_features(), space.len())
    }

    fn max_queue_size(&self) -> u16 {
        self.queue_size
    }

    /// Gives the client its port on the switch: a group MAC, or one another client has, is
    /// refused.
    fn admit(&mut self, index: usize, mac: &Mac, _now_ns: u64) -> Result<VirtualNic, Refusal> {
        self.switch.add_client(index, *mac).map_err(Refusal::Mac)?;
        Ok(VirtualNic { mac: *mac })
    }

    /// Takes up to [`TX_BUDGET`] frames of client `index` and forwards them.
    fn serve<N: Notifier>(&mut self, visit: Visit<'_, '_, N, Self>) -> Turn {
        let Visit { clients, index, .. } = visit;
        let mut frame = [0u8; MAX_FRAME];
        let mut turn = Turn::Idle;
        for _ in 0..TX_BUDGET {
            let Some(taken) = self.take_tx(clients, index, &mut frame) else {
                break;
            };
            turn = Turn::Worked;
            if let Some(len) = taken {
                self.forward(clients, Port::Client(index), &frame[..len]);
            }
        }
        turn
    }

    /// Forwards up to [`RX_BUDGET`] frames the uplink received, then tells the uplink.
    fn finish_pass<N: Notifier>(&mut self, clients: &mut Clients<'_, N, Self>, _: u64) -> Progress {
        let mut frame = [0u8; MAX_FRAME];
        let mut progress = Progress::default();
        for _ in 0..RX_BUDGET {
            let Some(len) = self.uplink.receive(&mut frame) else {
                break;
            };
            progress.busy = true;
            self.stats.uplink_rx += 1;
            self.forward(clients, Port::Uplink, &frame[..len]);
        }
        self.uplink.flush();
        progress
    }

    fn device(&mut self) -> &mut dyn DeviceInterrupts {
        &mut self.uplink
    }

    /// Receive buffers are always with the NIC: without its interrupt, it is polled.
    fn in_flight(&self) -> usize {
        1
    }

    fn report(stats: &ClientStats, out: &mut dyn fmt::Write) -> fmt::Result {
        write!(
            out,
            "tx {} frames {} bytes, rx {} frames {} bytes, dropped: spoofed {} malformed {} no-buffer {}",
            stats.tx_frames,
            stats.tx_bytes,
            stats.rx_frames,
            stats.rx_bytes,
            stats.spoofed,
            stats.malformed,
            stats.rx_no_buffer
        )
    }
}

/// Why a transmit chain carries no frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxError {
    /// Device-writable buffers in a transmit chain (§5.1.6.2: the driver MUST NOT).
    Writable,
    /// Fewer than 12 + 14 readable bytes: no header or no Ethernet header.
    TooShort,
    /// More than 12 + 1514 readable bytes.
    TooLong,
    /// Offloads that were not negotiated (§5.1.6.2: NEEDS_CSUM needs CSUM, gso_type needs
    /// HOST_TSO*/HOST_UFO).
    Offload,
    /// The chain could not be read.
    Read(virtio::Error),
}

/// Reads and checks the frame of a transmit chain (§5.1.6.2) into `frame`; its length.
pub fn read_tx_frame(
    chain: &Chain,
    area: &GrantedArea<'_>,
    frame: &mut [u8; MAX_FRAME],
) -> Result<usize, TxError> {
    if chain.writable_len() != 0 {
        return Err(TxError::Writable);
    }
    let total = chain.readable_len();
    if total < (HEADER + crate::switch::ETH_HEADER) as u64 {
        return Err(TxError::TooShort);
    }
    if total > (HEADER + MAX_FRAME) as u64 {
        return Err(TxError::TooLong);
    }
    let len = total as usize - HEADER;
    let mut header = [0u8; HEADER];
    read_readable(chain, area, 0, &mut header).map_err(TxError::Read)?;
    let header = net::Header::from_bytes(&header);
    if header.flags & net::header_flags::NEEDS_CSUM != 0 || header.gso_type != net::gso::NONE {
        return Err(TxError::Offload);
    }
    read_readable(chain, area, HEADER as u64, &mut frame[..len]).map_err(TxError::Read)?;
    Ok(len)
}
