//! The frame engine: each client's virtio-net queues (§5.1.2: receiveq1 = 0, transmitq1 = 1)
//! on one side, the [`Uplink`] on the other, the [`Switch`] between them.
//!
//! Each pass of [`Server::run_once`]:
//! 1. answers every client's control requests (reset, features, queue enables, DRIVER_OK);
//! 2. takes frames from serving clients' transmit queues (round robin, a budget per client),
//!    validates them, returns the buffers, and forwards each frame where the switch says;
//! 3. takes frames the uplink received and forwards them;
//! 4. tells the uplink and the clients (used buffer notifications, where asked for).
//!
//! A frame is delivered to a client by copying it, behind a 12-byte header
//! (`num_buffers` = 1, §5.1.6.4), into the next buffer of the client's receive queue. A client
//! with no receive buffer posted loses the frame (counted), as on a real NIC.
//!
//! Errors, per client: a transmitted frame that breaks the frame rules (no room for the
//! header, shorter than an Ethernet header, longer than 1514 bytes, offloads that were not
//! negotiated, device-writable buffers) or the MAC policy (a source that is not the client's
//! MAC) is dropped, counted, and its buffer returned: the client goes on. A chain that breaks
//! the virtqueue rules, or a receive buffer too small for a full frame or with device-readable
//! parts, stops service to that client (DEVICE_NEEDS_RESET, §2.1.2) until it resets; the other
//! clients and the uplink are not affected.

use virtio::devices::{id, net};
use virtio::dma::DmaRegion;
use virtio::features::{Features, bits};
use virtio::packed::PackedDeviceQueue;
use virtio::queue::{Chain, DeviceQueue, GrantedArea};
use virtio::split::SplitDeviceQueue;
use virtio::transport::shmem::{DeviceDescription, Notifier, SharedMemoryDevice};

use crate::switch::{FrameError, MAX_CLIENTS, MAX_FRAME, Mac, Port, Switch, SwitchError, Targets};
use crate::uplink::{Uplink, UplinkError};

/// Header in front of every frame on client queues (VERSION_1 is always negotiated here).
pub const HEADER: usize = net::Header::SIZE;
/// Smallest receive buffer a client must post: header and a full frame (§5.1.6.3.1: without
/// MRG_RXBUF and GUEST_TSO the driver SHOULD post buffers of at least 1526 bytes; this server
/// makes it a MUST).
pub const MIN_RX_BUFFER: u64 = (HEADER + MAX_FRAME) as u64;
/// Largest queue size offered to a client.
pub const MAX_CLIENT_QUEUE: u16 = 256;
/// Frames taken from one client's transmit queue per pass (fairness between clients).
pub const TX_BUDGET: usize = 32;
/// Frames taken from the uplink per pass.
pub const RX_BUDGET: usize = 64;

/// Why the server stopped serving a client until it resets the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// A queue broke the virtqueue rules (loops, bad indexes, buffers outside the data area...).
    Queue(virtio::Error),
    /// A receive buffer with device-readable parts or too small for a full frame.
    BadRxBuffer,
    /// Returning a buffer failed (the used ring could not be written).
    Completion(virtio::Error),
}

/// Where a client stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Not (yet) DRIVER_OK with both queues, or reset: nothing is exchanged.
    Idle,
    /// Frames flow.
    Serving,
    /// Stopped until the client resets the device.
    Broken(Broken),
}

/// Counters per client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
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
    /// Device resets by the client.
    pub resets: u32,
    /// Times service was stopped because the client broke the queue rules.
    pub breaks: u32,
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

enum ClientQueue<'a> {
    Split(SplitDeviceQueue<'a>),
    Packed(PackedDeviceQueue<'a>),
}

impl ClientQueue<'_> {
    fn queue(&mut self) -> &mut dyn DeviceQueue {
        match self {
            ClientQueue::Split(q) => q,
            ClientQueue::Packed(q) => q,
        }
    }
}

struct Client<'a, N> {
    device: SharedMemoryDevice<'a, N>,
    area: GrantedArea<'a>,
    rx: Option<ClientQueue<'a>>,
    tx: Option<ClientQueue<'a>>,
    state: ClientState,
    /// Queues whose used ring changed since the last notification check (bit q).
    pushed: u32,
    stats: ClientStats,
}

/// What a pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Something happened (worth another pass).
    pub busy: bool,
}

/// The features offered to clients: their MAC and link status (§5.1.3), and the ring
/// features the library serves (§6). No offloads: every frame is a plain Ethernet frame.
pub fn client_features() -> Features {
    Features::from_bits(&[
        net::features::MAC,
        net::features::STATUS,
        bits::EVENT_IDX,
        bits::INDIRECT_DESC,
        bits::RING_PACKED,
    ])
}

/// The configuration space a client sees (§5.1.4): its MAC and status LINK_UP.
pub fn client_config(mac: Mac) -> [u8; 8] {
    let mut config = [0u8; 8];
    config[net::config::MAC..net::config::MAC + 6].copy_from_slice(&mac);
    config[net::config::STATUS..net::config::STATUS + 2]
        .copy_from_slice(&net::link_status::LINK_UP.to_le_bytes());
    config
}

/// Why a client could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddError {
    /// Every client slot is taken.
    Full,
    /// The MAC is refused by the switch.
    Mac(SwitchError),
    /// The shared region cannot hold the channel.
    Layout(virtio::Error),
}

/// The network server: clients, the switch and the uplink.
pub struct Server<'a, U, N> {
    uplink: U,
    switch: Switch,
    clients: [Option<Client<'a, N>>; MAX_CLIENTS],
    next_client: usize,
    stats: SwitchStats,
}

impl<U, N> core::fmt::Debug for Server<'_, U, N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Server")
            .field("switch", &self.switch)
            .field("stats", &self.stats)
            .finish()
    }
}

impl<'a, U: Uplink, N: Notifier> Server<'a, U, N> {
    /// A server over `uplink`, with no clients yet.
    pub fn new(uplink: U) -> Self {
        Self {
            uplink,
            switch: Switch::new(),
            clients: [const { None }; MAX_CLIENTS],
            next_client: 0,
            stats: SwitchStats::default(),
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

    /// Lays out a channel for a client with address `mac` in `region` (`ring_len` bytes of
    /// ring area for its two queues, the rest after the control block its data area) and
    /// tells the client (a configuration change notification, so a client of a previous
    /// server generation notices). Returns the client's index.
    pub fn add_client(
        &mut self,
        region: DmaRegion<'a>,
        ring_len: usize,
        mac: Mac,
        queue_size: u16,
        notifier: N,
    ) -> Result<usize, AddError> {
        let index = self
            .clients
            .iter()
            .position(Option::is_none)
            .ok_or(AddError::Full)?;
        self.switch.add_client(index, mac).map_err(AddError::Mac)?;
        let config = client_config(mac);
        let description = DeviceDescription {
            device_type: id::NET,
            features: client_features(),
            num_queues: 2,
            max_queue_size: queue_size.clamp(1, MAX_CLIENT_QUEUE),
            config: &config,
        };
        let mut device = SharedMemoryDevice::new(region, ring_len, &description, notifier)
            .map_err(AddError::Layout)?;
        device
            .update_config(net::config::STATUS, &config[6..8])
            .map_err(AddError::Layout)?;
        self.clients[index] = Some(Client {
            area: device.data_area(),
            device,
            rx: None,
            tx: None,
            state: ClientState::Idle,
            pushed: 0,
            stats: ClientStats::default(),
        });
        Ok(index)
    }

    /// Client `index`'s state.
    pub fn client_state(&self, index: usize) -> Option<ClientState> {
        Some(self.clients.get(index)?.as_ref()?.state)
    }

    /// Client `index`'s counters.
    pub fn client_stats(&self, index: usize) -> Option<ClientStats> {
        Some(self.clients.get(index)?.as_ref()?.stats)
    }

    /// Client `index`'s MAC.
    pub fn client_mac(&self, index: usize) -> Option<Mac> {
        self.switch.mac(index)
    }

    /// Runs passes until one does nothing (bounded).
    pub fn run(&mut self) {
        for _ in 0..10_000 {
            if !self.run_once().busy {
                break;
            }
        }
    }

    /// One pass: control, client frames, uplink frames, notifications.
    pub fn run_once(&mut self) -> Progress {
        let mut busy = false;
        for index in 0..MAX_CLIENTS {
            busy |= self.control(index);
        }
        let mut frame = [0u8; MAX_FRAME];
        for _ in 0..MAX_CLIENTS {
            let index = self.next_client;
            self.next_client = (self.next_client + 1) % MAX_CLIENTS;
            for _ in 0..TX_BUDGET {
                match self.take_tx(index, &mut frame) {
                    Some(Some(len)) => {
                        busy = true;
                        self.forward(Port::Client(index), &frame[..len]);
                    }
                    Some(None) => busy = true,
                    None => break,
                }
            }
        }
        for _ in 0..RX_BUDGET {
            let Some(len) = self.uplink.receive(&mut frame) else {
                break;
            };
            busy = true;
            self.stats.uplink_rx += 1;
            self.forward(Port::Uplink, &frame[..len]);
        }
        self.uplink.flush();
        self.notify_clients();
        Progress { busy }
    }

    /// Answers client `index`'s control requests.
    fn control(&mut self, index: usize) -> bool {
        let Some(client) = self.clients[index].as_mut() else {
            return false;
        };
        let _ = client.device.take_kicks();
        let events = match client.device.process_requests() {
            Ok(events) => events,
            Err(e) => {
                if client.state != ClientState::Broken(Broken::Queue(e)) {
                    client.state = ClientState::Broken(Broken::Queue(e));
                    client.rx = None;
                    client.tx = None;
                    client.stats.breaks += 1;
                }
                return false;
            }
        };
        let mut busy = false;
        if events.reset || events.failed {
            client.rx = None;
            client.tx = None;
            client.state = ClientState::Idle;
            if events.reset {
                client.stats.resets += 1;
            }
            busy = true;
        }
        let packed = client.device.negotiated().has(bits::RING_PACKED);
        let open = |device: &SharedMemoryDevice<'a, N>, q: u16| {
            if packed {
                device.packed_queue(q).map(ClientQueue::Packed).ok()
            } else {
                device.split_queue(q).map(ClientQueue::Split).ok()
            }
        };
        if events.queues_enabled & (1 << net::queue::RX) != 0 {
            client.rx = open(&client.device, net::queue::RX);
            // Receive buffers are taken when a frame arrives: no kicks needed for them.
            if let Some(rx) = client.rx.as_mut() {
                let _ = rx.queue().disable_notifications();
            }
            busy = true;
        }
        if events.queues_enabled & (1 << net::queue::TX) != 0 {
            client.tx = open(&client.device, net::queue::TX);
            busy = true;
        }
        if events.driver_ok && client.rx.is_some() && client.tx.is_some() {
            client.state = ClientState::Serving;
            busy = true;
        }
        busy
    }

    /// Stops serving client `index` until it resets.
    fn break_client(&mut self, index: usize, why: Broken) {
        if let Some(client) = self.clients[index].as_mut() {
            client.state = ClientState::Broken(why);
            client.rx = None;
            client.tx = None;
            client.stats.breaks += 1;
            let _ = client.device.set_needs_reset();
        }
    }

    /// Takes one chain from client `index`'s transmit queue and returns its buffer. `None`:
    /// nothing to take; `Some(None)`: a chain was consumed but carried no forwardable frame;
    /// `Some(Some(len))`: a valid frame of `len` bytes is in `frame`.
    fn take_tx(&mut self, index: usize, frame: &mut [u8; MAX_FRAME]) -> Option<Option<usize>> {
        let client = self.clients[index].as_mut()?;
        if client.state != ClientState::Serving {
            return None;
        }
        let tx = client.tx.as_mut()?;
        let chain = match tx.queue().pop() {
            Ok(Some(chain)) => chain,
            Ok(None) => {
                // Ask for a kick, then re-check (§2.7.10).
                return match tx.queue().enable_notifications() {
                    Ok(true) => Some(None),
                    Ok(false) => None,
                    Err(e) => {
                        self.break_client(index, Broken::Queue(e));
                        Some(None)
                    }
                };
            }
            Err(e) => {
                self.break_client(index, Broken::Queue(e));
                return Some(None);
            }
        };
        let valid = read_tx_frame(&chain, &client.area, frame);
        // §5.1.6.2: transmit buffers are returned with nothing written.
        if let Err(e) = tx.queue().push(&chain, 0) {
            self.break_client(index, Broken::Completion(e));
            return Some(None);
        }
        client.pushed |= 1 << net::queue::TX;
        match valid {
            Ok(len) => Some(Some(len)),
            Err(_) => {
                client.stats.malformed += 1;
                Some(None)
            }
        }
    }

    /// Sends `frame` from `from` wherever the switch says.
    fn forward(&mut self, from: Port, frame: &[u8]) {
        let targets = match self.switch.route(from, frame) {
            Ok(t) => t,
            Err(e) => {
                match from {
                    Port::Client(n) => {
                        if let Some(c) = self.clients[n].as_mut() {
                            match e {
                                FrameError::SpoofedSource | FrameError::MulticastSource => {
                                    c.stats.spoofed += 1
                                }
                                _ => c.stats.malformed += 1,
                            }
                        }
                    }
                    Port::Uplink => self.stats.uplink_refused += 1,
                }
                return;
            }
        };
        if let Port::Client(n) = from
            && let Some(c) = self.clients[n].as_mut()
        {
            c.stats.tx_frames += 1;
            c.stats.tx_bytes += frame.len() as u64;
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
        for index in 0..MAX_CLIENTS {
            if targets.clients & (1 << index) != 0 {
                self.deliver(index, frame);
            }
        }
    }

    /// Copies `frame` into client `index`'s next receive buffer.
    fn deliver(&mut self, index: usize, frame: &[u8]) {
        let Some(client) = self.clients[index].as_mut() else {
            return;
        };
        if client.state != ClientState::Serving {
            return;
        }
        let Some(rx) = client.rx.as_mut() else {
            return;
        };
        let chain = match rx.queue().pop() {
            Ok(Some(chain)) => chain,
            Ok(None) => {
                client.stats.rx_no_buffer += 1;
                return;
            }
            Err(e) => return self.break_client(index, Broken::Queue(e)),
        };
        if chain.readable_len() != 0 || chain.writable_len() < MIN_RX_BUFFER {
            return self.break_client(index, Broken::BadRxBuffer);
        }
        // §5.1.6.4: flags 0 (no checksum offload negotiated), gso NONE, num_buffers 1.
        let header = net::Header {
            num_buffers: 1,
            ..net::Header::default()
        }
        .to_bytes();
        let mut writer = chain.writer(&client.area);
        let written = writer
            .write(&header)
            .and_then(|()| writer.write(frame))
            .map(|()| writer.written());
        let result = written.and_then(|n| rx.queue().push(&chain, n));
        match result {
            Ok(()) => {
                client.pushed |= 1 << net::queue::RX;
                client.stats.rx_frames += 1;
                client.stats.rx_bytes += frame.len() as u64;
            }
            Err(e) => self.break_client(index, Broken::Completion(e)),
        }
    }

    /// Sends used buffer notifications where the clients asked for them.
    fn notify_clients(&mut self) {
        for client in self.clients.iter_mut() {
            let Some(client) = client.as_mut() else {
                continue;
            };
            let pushed = core::mem::take(&mut client.pushed);
            for (q, queue) in [
                (net::queue::RX, &mut client.rx),
                (net::queue::TX, &mut client.tx),
            ] {
                if pushed & (1 << q) == 0 {
                    continue;
                }
                if let Some(queue) = queue.as_mut()
                    && matches!(queue.queue().should_interrupt(), Ok(true))
                {
                    let _ = client.device.interrupt(q);
                }
            }
        }
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
    let mut reader = chain.reader(area);
    reader.read_exact(&mut header).map_err(TxError::Read)?;
    let header = net::Header::from_bytes(&header);
    if header.flags & net::header_flags::NEEDS_CSUM != 0 || header.gso_type != net::gso::NONE {
        return Err(TxError::Offload);
    }
    reader
        .read_exact(&mut frame[..len])
        .map_err(TxError::Read)?;
    Ok(len)
}
