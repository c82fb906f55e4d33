//! The entropy engine: each client's virtio-rng requestq (§5.4) served from the shared
//! [`Source`] at the client's rate.
//!
//! A request is one chain of device-writable buffers; the answer is the random bytes written
//! into it, the used length saying how many (§5.4.6: at least one, possibly fewer than the
//! buffer holds). Per pass of [`Server::run_once`], round robin from a rotating start, each
//! serving client gets at most one request answered with
//! `min(buffer, CHUNK, its rate credit, bytes the device has delivered)` bytes. A request the
//! client has no credit for, or that finds the pool empty, waits (it is held, not failed)
//! until credit returns or the device delivers; so a client over its rate is served at its
//! rate, and no client can take more than one request's worth per pass while others wait:
//! nobody starves.
//!
//! A chain with a device-readable buffer, or one that breaks the ring protocol, stops service
//! to that client (DEVICE_NEEDS_RESET, §2.1.2) until it resets the device; other clients are
//! not affected.

use virtio::devices::{entropy, id};
use virtio::dma::DmaRegion;
use virtio::queue::{Chain, GrantedArea};
use virtio::transport::shmem::{DeviceDescription, Notifier, SharedMemoryDevice};

use crate::chan::{ClientQueue, ring_features, write_writable};
use crate::rate::TokenBucket;
use crate::source::Source;

/// Most clients one server serves.
pub const MAX_CLIENTS: usize = 8;
/// Largest queue size offered to a client.
pub const CLIENT_QUEUE: u16 = 64;
/// Most bytes one answer carries.
pub const CHUNK: usize = 512;

/// One client's share, from its channel's configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntropySpec {
    /// Bytes per second (`None`: unlimited).
    pub rate: Option<u64>,
    /// Burst in bytes (`None`: one second's worth).
    pub burst: Option<u64>,
}

/// Why the server stopped serving a client until it resets the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// The ring broke the virtqueue rules (the library refused a chain).
    Queue(virtio::Error),
    /// A request with a device-readable buffer (§5.4.6: requests are device-writable only).
    ReadableBuffer,
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
    /// Random bytes handed out.
    pub bytes: u64,
    /// Requests answered.
    pub requests: u64,
    /// Requests answered with fewer bytes than their buffer holds.
    pub partial: u64,
    /// Times a request had to wait for rate credit.
    pub throttled: u64,
    /// Device resets by the client.
    pub resets: u32,
    /// Times service stopped because the client broke the rules.
    pub breaks: u32,
}

struct Client<'a, N> {
    device: SharedMemoryDevice<'a, N>,
    area: GrantedArea<'a>,
    bucket: TokenBucket,
    queue: Option<ClientQueue<'a>>,
    /// A request waiting for credit or entropy.
    held: Option<Chain>,
    waiting: bool,
    state: ClientState,
    interrupt: bool,
    stats: ClientStats,
}

impl<N> Client<'_, N> {
    fn stop(&mut self, state: ClientState) {
        self.state = state;
        self.queue = None;
        self.held = None;
        self.waiting = false;
    }
}

/// What a pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Something happened (worth another pass).
    pub busy: bool,
    /// The earliest time rate credit lets a held request go, if one waits for it.
    pub wake_at: Option<u64>,
    /// Requests held because the device has not delivered enough yet.
    pub starved: bool,
}

/// The entropy server: clients and the device's pool.
pub struct Server<'a, S, N> {
    source: S,
    clients: [Option<Client<'a, N>>; MAX_CLIENTS],
    next: usize,
}

impl<S, N> core::fmt::Debug for Server<'_, S, N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Server")
            .field(
                "clients",
                &self.clients.iter().filter(|c| c.is_some()).count(),
            )
            .finish()
    }
}

impl<'a, S: Source, N: Notifier> Server<'a, S, N> {
    /// A server over `source`, with no clients yet.
    pub fn new(source: S) -> Self {
        Self {
            source,
            clients: [const { None }; MAX_CLIENTS],
            next: 0,
        }
    }

    /// The source.
    pub fn source(&mut self) -> &mut S {
        &mut self.source
    }

    /// Lays out a channel in `region` offering an entropy device (§5.4: one queue, no
    /// features, no configuration) limited by `spec`. Returns the client's index.
    pub fn add_client(
        &mut self,
        region: DmaRegion<'a>,
        ring_len: usize,
        spec: EntropySpec,
        now_ns: u64,
        notifier: N,
    ) -> virtio::Result<usize> {
        let index = self
            .clients
            .iter()
            .position(Option::is_none)
            .ok_or(virtio::Error::QueueUnavailable)?;
        let description = DeviceDescription {
            device_type: id::ENTROPY,
            features: ring_features(),
            num_queues: 1,
            max_queue_size: CLIENT_QUEUE,
            config: &[],
        };
        let mut device = SharedMemoryDevice::new(region, ring_len, &description, notifier)?;
        // A client of a previous server generation notices the fresh layout.
        device.interrupt(entropy::REQUEST_QUEUE)?;
        self.clients[index] = Some(Client {
            area: device.data_area(),
            device,
            bucket: TokenBucket::from_config(spec.rate, spec.burst, now_ns),
            queue: None,
            held: None,
            waiting: false,
            state: ClientState::Idle,
            interrupt: false,
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
            busy: self.source.poll(),
            ..Progress::default()
        };
        for index in 0..MAX_CLIENTS {
            progress.busy |= self.control(index);
        }
        for k in 0..MAX_CLIENTS {
            let index = (self.next + k) % MAX_CLIENTS;
            self.serve(index, now_ns, &mut progress);
        }
        self.next = (self.next + 1) % MAX_CLIENTS;
        for client in self.clients.iter_mut().flatten() {
            if core::mem::take(&mut client.interrupt) {
                let wanted = client
                    .queue
                    .as_mut()
                    .is_some_and(|q| q.queue().should_interrupt().unwrap_or(true));
                if wanted {
                    let _ = client.device.interrupt(entropy::REQUEST_QUEUE);
                }
            }
        }
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
        if events.queues_enabled & 1 != 0 {
            client.queue = ClientQueue::open(&client.device, entropy::REQUEST_QUEUE).ok();
            busy = true;
        }
        if events.driver_ok && client.queue.is_some() {
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

    /// Answers at most one request of client `index`.
    fn serve(&mut self, index: usize, now_ns: u64, progress: &mut Progress) {
        let Some(client) = self.clients[index].as_mut() else {
            return;
        };
        if client.state != ClientState::Serving {
            return;
        }
        let Some(queue) = client.queue.as_mut() else {
            return;
        };
        if client.held.is_none() {
            match queue.next_chain() {
                Ok(Some(chain)) => {
                    progress.busy = true;
                    if chain.readable_len() > 0 {
                        return self.break_client(index, Broken::ReadableBuffer);
                    }
                    client.held = Some(chain);
                }
                Ok(None) => return,
                Err(e) => {
                    progress.busy = true;
                    return self.break_client(index, Broken::Queue(e));
                }
            }
        }
        let Some(chain) = client.held.as_ref() else {
            return;
        };
        let want = (chain.writable_len() as usize).min(CHUNK);
        let credit = client.bucket.available(now_ns);
        if credit == 0 {
            if !client.waiting {
                client.waiting = true;
                client.stats.throttled += 1;
            }
            // Wake for a fiftieth of a second's worth: few wake-ups, short waits.
            let step = client.bucket.rate().map_or(1, |r| (r / 50).max(1));
            if let Some(at) = client.bucket.ready_at((want as u64).min(step)) {
                progress.wake_at = Some(progress.wake_at.map_or(at, |w: u64| w.min(at)));
            }
            return;
        }
        let available = self.source.available();
        if available == 0 {
            progress.starved = true;
            return;
        }
        client.waiting = false;
        let n = want.min(available).min(credit.min(CHUNK as u64) as usize);
        let mut bytes = [0u8; CHUNK];
        let n = self.source.take(&mut bytes[..n]);
        let Some(chain) = client.held.take() else {
            return;
        };
        progress.busy = true;
        let result = write_writable(&chain, &client.area, &bytes[..n]).and_then(|()| {
            client
                .queue
                .as_mut()
                .ok_or(virtio::Error::QueueUnavailable)?
                .queue()
                .push(&chain, n as u32)
        });
        // What was handed out is not kept.
        bytes[..n].fill(0);
        match result {
            Ok(()) => {
                client.bucket.take(n as u64);
                client.stats.bytes += n as u64;
                client.stats.requests += 1;
                if (n as u64) < chain.writable_len() {
                    client.stats.partial += 1;
                }
                client.interrupt = true;
            }
            Err(e) => self.break_client(index, Broken::Completion(e)),
        }
    }
}
