//! The console engine: each client's port-0 console (§5.3) over its channel, forwarded to the
//! real device's port the description gave it.
//!
//! Each pass of [`Server::run_once`]:
//! 1. lets the backend do its work (completions, control messages);
//! 2. answers each client's control requests (reset, features, queue enables, DRIVER_OK);
//! 3. output: takes the client's transmitq chains and forwards their bytes to its port, as
//!    far as its rate credit and the port's free transmit buffers allow; a chain is returned
//!    once all its bytes went out (so a client over its rate is slowed down, its bytes are
//!    never dropped); at most [`CHUNKS_PER_PASS`] chunks per client per pass, round robin;
//! 4. input: while its port has host input, fills the client's receiveq buffers with it;
//! 5. sends used buffer notifications where the clients asked for them.
//!
//! A chain that breaks the ring protocol, a transmitq chain with a device-writable buffer or a
//! receiveq chain with a device-readable one (§5.3.6.1: transmit buffers are device-readable,
//! receive buffers device-writable) stops service to that client (DEVICE_NEEDS_RESET, §2.1.2)
//! until it resets the device; other clients are not affected.

use virtio::devices::{console, id};
use virtio::dma::DmaRegion;
use virtio::queue::{Chain, GrantedArea};
use virtio::transport::shmem::{DeviceDescription, Notifier, SharedMemoryDevice};

use crate::backend::Ports;
use ioserver::chain::{read_readable, write_writable};
use ioserver::rate::TokenBucket;
use ioserver::{ClientQueue, ring_features};

/// Most clients one server serves.
pub const MAX_CLIENTS: usize = 8;
/// Largest queue size offered to a client.
pub const CLIENT_QUEUE: u16 = 64;
/// Bytes moved per step.
pub const CHUNK: usize = 256;
/// Output steps per client per pass: no client holds the others up for long.
pub const CHUNKS_PER_PASS: usize = 4;

/// One client's console, from its channel's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleSpec {
    /// The real device's port its console is.
    pub port: u32,
    /// Output bytes per second (`None`: unlimited).
    pub rate: Option<u64>,
    /// Output burst in bytes (`None`: one second's worth).
    pub burst: Option<u64>,
}

/// Why a channel's configuration does not describe a usable console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecError {
    /// `port` is missing or not an integer.
    MissingPort,
    /// `port` is beyond the device's ports (or the server's limit).
    PortOutOfRange,
    /// Another client already has that port.
    PortTaken,
}

impl ConsoleSpec {
    /// From a channel's `port`, `rate` and `burst` values; `max_ports` is the device's
    /// `max_nr_ports` (§5.3.4); `taken` are the ports other clients already have.
    pub fn from_config(
        port: Option<u64>,
        rate: Option<u64>,
        burst: Option<u64>,
        max_ports: u32,
        taken: &[u32],
    ) -> Result<Self, SpecError> {
        let port = port.ok_or(SpecError::MissingPort)?;
        let port = u32::try_from(port)
            .ok()
            .filter(|&p| p < max_ports)
            .ok_or(SpecError::PortOutOfRange)?;
        if taken.contains(&port) {
            return Err(SpecError::PortTaken);
        }
        Ok(Self { port, rate, burst })
    }
}

/// Why the server stopped serving a client until it resets the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// The ring broke the virtqueue rules (the library refused a chain).
    Queue(virtio::Error),
    /// A transmitq chain with a device-writable buffer.
    WritableOutput,
    /// A receiveq chain with a device-readable buffer.
    ReadableInput,
    /// Returning a chain failed.
    Completion(virtio::Error),
}

/// Where a client stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Not (yet) DRIVER_OK, or reset.
    Idle,
    /// Served.
    Serving,
    /// Stopped until the client resets the device.
    Broken(Broken),
}

/// Counters per client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Bytes forwarded to the client's port.
    pub bytes_out: u64,
    /// Bytes of host input delivered to the client.
    pub bytes_in: u64,
    /// Transmit chains completed.
    pub chains_out: u64,
    /// Times output had to wait for rate credit.
    pub throttled: u64,
    /// Device resets by the client.
    pub resets: u32,
    /// Times service stopped because the client broke the rules.
    pub breaks: u32,
}

struct Client<'a, N> {
    device: SharedMemoryDevice<'a, N>,
    area: GrantedArea<'a>,
    spec: ConsoleSpec,
    rx: Option<ClientQueue<'a>>,
    tx: Option<ClientQueue<'a>>,
    state: ClientState,
    bucket: TokenBucket,
    /// The transmit chain being forwarded and how many of its bytes went out.
    sending: Option<(Chain, u64)>,
    /// Whether the last output attempt waited for credit (counted once per wait).
    waiting: bool,
    interrupts: u32,
    stats: ClientStats,
}

/// What a pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Something happened (worth another pass).
    pub busy: bool,
    /// The earliest time rate credit lets output continue, if some waits for it.
    pub wake_at: Option<u64>,
}

/// The console server: clients and the real device's ports.
pub struct Server<'a, P, N> {
    ports: P,
    clients: [Option<Client<'a, N>>; MAX_CLIENTS],
    next: usize,
}

impl<P, N> core::fmt::Debug for Server<'_, P, N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Server")
            .field(
                "clients",
                &self.clients.iter().filter(|c| c.is_some()).count(),
            )
            .finish()
    }
}

impl<'a, P: Ports, N: Notifier> Server<'a, P, N> {
    /// A server over `ports`, with no clients yet.
    pub fn new(ports: P) -> Self {
        Self {
            ports,
            clients: [const { None }; MAX_CLIENTS],
            next: 0,
        }
    }

    /// The backend.
    pub fn ports(&mut self) -> &mut P {
        &mut self.ports
    }

    /// Lays out a channel in `region` (`ring_len` bytes of ring area) offering a console with
    /// port 0 only (no MULTIPORT, no size, no emergency write: §5.3.3) backed by `spec.port`.
    /// Returns the client's index.
    pub fn add_client(
        &mut self,
        region: DmaRegion<'a>,
        ring_len: usize,
        spec: ConsoleSpec,
        now_ns: u64,
        notifier: N,
    ) -> virtio::Result<usize> {
        if self
            .clients
            .iter()
            .flatten()
            .any(|c| c.spec.port == spec.port)
        {
            return Err(virtio::Error::QueueUnavailable);
        }
        let index = self
            .clients
            .iter()
            .position(Option::is_none)
            .ok_or(virtio::Error::QueueUnavailable)?;
        let config = [0u8; console::config::SIZE];
        let description = DeviceDescription {
            device_type: id::CONSOLE,
            features: ring_features(),
            num_queues: 2,
            max_queue_size: CLIENT_QUEUE,
            config: &config,
        };
        let device = SharedMemoryDevice::new(region, ring_len, &description, notifier)?;
        let mut device = device;
        // A client of a previous server generation notices the fresh layout.
        device.update_config(0, &config[..2])?;
        self.clients[index] = Some(Client {
            area: device.data_area(),
            device,
            spec,
            rx: None,
            tx: None,
            state: ClientState::Idle,
            bucket: TokenBucket::from_config(spec.rate, spec.burst, now_ns),
            sending: None,
            waiting: false,
            interrupts: 0,
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

    /// One pass at time `now_ns`.
    pub fn run_once(&mut self, now_ns: u64) -> Progress {
        let mut progress = Progress {
            busy: self.ports.poll(),
            wake_at: None,
        };
        for index in 0..MAX_CLIENTS {
            progress.busy |= self.control(index);
        }
        for k in 0..MAX_CLIENTS {
            let index = (self.next + k) % MAX_CLIENTS;
            let (busy, wake) = self.output(index, now_ns);
            progress.busy |= busy;
            if let Some(at) = wake {
                progress.wake_at = Some(progress.wake_at.map_or(at, |w: u64| w.min(at)));
            }
            progress.busy |= self.input(index);
        }
        self.next = (self.next + 1) % MAX_CLIENTS;
        self.notify_clients();
        progress
    }

    /// Runs passes at `now_ns` until one does nothing.
    pub fn run(&mut self, now_ns: u64) -> Progress {
        let mut last = Progress::default();
        for _ in 0..10_000 {
            last = self.run_once(now_ns);
            if !last.busy {
                break;
            }
        }
        last
    }

    fn control(&mut self, index: usize) -> bool {
        let Some(client) = self.clients[index].as_mut() else {
            return false;
        };
        let _ = client.device.take_kicks();
        let events = match client.device.process_requests() {
            Ok(events) => events,
            Err(e) => {
                if client.state != ClientState::Broken(Broken::Queue(e)) {
                    client.stop(ClientState::Broken(Broken::Queue(e)));
                    client.stats.breaks += 1;
                }
                return false;
            }
        };
        let mut busy = false;
        if events.reset || events.failed {
            client.stop(ClientState::Idle);
            if events.reset {
                client.stats.resets += 1;
            }
            busy = true;
        }
        if events.queues_enabled & (1 << console::queue::RX0) != 0 {
            client.rx = ClientQueue::open(&client.device, console::queue::RX0).ok();
            busy = true;
        }
        if events.queues_enabled & (1 << console::queue::TX0) != 0 {
            client.tx = ClientQueue::open(&client.device, console::queue::TX0).ok();
            busy = true;
        }
        if events.driver_ok && (client.rx.is_some() || client.tx.is_some()) {
            client.state = ClientState::Serving;
            busy = true;
        }
        busy
    }

    fn break_client(&mut self, index: usize, why: Broken) {
        if let Some(client) = self.clients[index].as_mut() {
            client.stop(ClientState::Broken(why));
            client.stats.breaks += 1;
            let _ = client.device.set_needs_reset();
        }
    }

    /// Forwards client `index`'s output; whether anything moved, and when credit returns if
    /// it ran out.
    fn output(&mut self, index: usize, now_ns: u64) -> (bool, Option<u64>) {
        let mut busy = false;
        for _ in 0..CHUNKS_PER_PASS {
            let Some(client) = self.clients[index].as_mut() else {
                return (busy, None);
            };
            if client.state != ClientState::Serving {
                return (busy, None);
            }
            let Some(tx) = client.tx.as_mut() else {
                return (busy, None);
            };
            if client.sending.is_none() {
                match tx.next_chain() {
                    Ok(Some(chain)) => {
                        busy = true;
                        if chain.writable_len() > 0 {
                            self.break_client(index, Broken::WritableOutput);
                            return (true, None);
                        }
                        client.sending = Some((chain, 0));
                    }
                    Ok(None) => return (busy, None),
                    Err(e) => {
                        self.break_client(index, Broken::Queue(e));
                        return (true, None);
                    }
                }
            }
            let Some((chain, sent)) = client.sending.as_ref() else {
                return (busy, None);
            };
            let remaining = chain.readable_len() - sent;
            if remaining > 0 {
                let credit = client.bucket.available(now_ns);
                if credit == 0 {
                    if !client.waiting {
                        client.waiting = true;
                        client.stats.throttled += 1;
                    }
                    // Wake for a fiftieth of a second's worth: smooth output, few wake-ups.
                    let step = client.bucket.rate().map_or(1, |r| (r / 50).max(1));
                    let want = remaining.min(CHUNK as u64).min(step);
                    return (busy, client.bucket.ready_at(want));
                }
                client.waiting = false;
                let n = (remaining.min(CHUNK as u64).min(credit)) as usize;
                let mut buf = [0u8; CHUNK];
                let n = match read_readable(chain, &client.area, *sent, &mut buf[..n]) {
                    Ok(n) => n,
                    Err(e) => {
                        self.break_client(index, Broken::Queue(e));
                        return (true, None);
                    }
                };
                let accepted = self.ports.write(client.spec.port, &buf[..n]);
                if accepted == 0 {
                    // The port's buffers are with the device: the next pass continues.
                    return (busy, None);
                }
                busy = true;
                client.bucket.take(accepted as u64);
                client.stats.bytes_out += accepted as u64;
                if let Some((_, sent)) = client.sending.as_mut() {
                    *sent += accepted as u64;
                }
            }
            let done = client
                .sending
                .as_ref()
                .is_some_and(|(c, sent)| *sent >= c.readable_len());
            if done {
                let Some((chain, _)) = client.sending.take() else {
                    continue;
                };
                // §5.3.6.1: nothing is written into a transmit buffer.
                let pushed = match client.tx.as_mut() {
                    Some(tx) => tx.queue().push(&chain, 0),
                    None => Err(virtio::Error::QueueUnavailable),
                };
                match pushed {
                    Ok(()) => {
                        client.stats.chains_out += 1;
                        client.interrupts |= 1 << console::queue::TX0;
                    }
                    Err(e) => {
                        self.break_client(index, Broken::Completion(e));
                        return (true, None);
                    }
                }
            }
        }
        (busy, None)
    }

    /// Delivers host input to client `index`; whether any moved.
    fn input(&mut self, index: usize) -> bool {
        let mut busy = false;
        loop {
            let Some(client) = self.clients[index].as_mut() else {
                return busy;
            };
            if client.state != ClientState::Serving {
                return busy;
            }
            let pending = self.ports.input_pending(client.spec.port);
            if pending == 0 {
                return busy;
            }
            let Some(rx) = client.rx.as_mut() else {
                return busy;
            };
            let chain = match rx.next_chain() {
                Ok(Some(chain)) => chain,
                // No buffer: the input waits in the port's buffers (and the device stops
                // reading the host side when they are full).
                Ok(None) => return busy,
                Err(e) => {
                    self.break_client(index, Broken::Queue(e));
                    return true;
                }
            };
            busy = true;
            if chain.readable_len() > 0 {
                self.break_client(index, Broken::ReadableInput);
                return true;
            }
            let n = (chain.writable_len() as usize).min(CHUNK).min(pending);
            let mut buf = [0u8; CHUNK];
            let n = self.ports.read(client.spec.port, &mut buf[..n]);
            let result = write_writable(&chain, &client.area, 0, &buf[..n]).and_then(|()| {
                client
                    .rx
                    .as_mut()
                    .ok_or(virtio::Error::QueueUnavailable)?
                    .queue()
                    .push(&chain, n as u32)
            });
            match result {
                Ok(()) => {
                    client.stats.bytes_in += n as u64;
                    client.interrupts |= 1 << console::queue::RX0;
                }
                Err(e) => {
                    self.break_client(index, Broken::Completion(e));
                    return true;
                }
            }
        }
    }

    fn notify_clients(&mut self) {
        for client in self.clients.iter_mut().flatten() {
            let bits = core::mem::take(&mut client.interrupts);
            for (q, queue) in [
                (console::queue::RX0, client.rx.as_mut()),
                (console::queue::TX0, client.tx.as_mut()),
            ] {
                if bits & (1 << q) == 0 {
                    continue;
                }
                let wanted = queue.is_some_and(|q| q.queue().should_interrupt().unwrap_or(true));
                if wanted {
                    let _ = client.device.interrupt(q);
                }
            }
        }
    }
}

impl<N> Client<'_, N> {
    /// Drops the queues and the chain in progress (a reset, a failure or a break, §2.4).
    fn stop(&mut self, state: ClientState) {
        self.state = state;
        self.rx = None;
        self.tx = None;
        self.sending = None;
        self.waiting = false;
    }
}
