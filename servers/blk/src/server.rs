//! The request engine: clients' virtio-blk queues in, backend requests out.
//!
//! Each pass of [`Server::run_once`]:
//! 1. answers every client's control requests (reset, feature handshake, queue enable,
//!    DRIVER_OK) through the library's device side;
//! 2. reaps finished backend requests, copies read data into the client's buffers and
//!    completes client requests whose every part finished;
//! 3. takes new chains from serving clients (round robin), checks them against the client's
//!    virtual disk, completes refused ones at once (IOERR, UNSUPP) and queues the rest;
//! 4. issues queued work to the backend in arrival order, one bounce slot per part (a client
//!    request larger than a slot is split), or, for a client whose data area the device can
//!    reach (zero copy, [`Server::set_dma_base`]), the whole request on the client's buffers;
//!    a flush only once the same client's earlier requests completed;
//! 5. sends used buffer notifications where the clients asked for them.
//!
//! Client errors never reach the real device: a request outside the virtual disk, a write to
//! a read-only disk or a length that is not a whole number of sectors completes with
//! VIRTIO_BLK_S_IOERR; an unknown request type with VIRTIO_BLK_S_UNSUPP. A chain that breaks
//! the ring protocol, or one without room for a header and a status byte, stops service to
//! that client (DEVICE_NEEDS_RESET, §2.1.2) until it resets the device; other clients are not
//! affected. A reset or break bumps the client's epoch: backend requests still in flight for
//! the old epoch finish into their bounce slots and are dropped, never copied into the client's
//! memory. A zero-copy request still on the device when its client asks for a reset holds the
//! reset's answer back until the device has finished with the client's buffers (§2.4).

use virtio::devices::{blk, id};
use virtio::dma::DmaRegion;
use virtio::features::bits;
use virtio::packed::PackedDeviceQueue;
use virtio::queue::{Buffer, Chain, DeviceQueue, GrantedArea};
use virtio::split::SplitDeviceQueue;
use virtio::transport::shmem::{DeviceDescription, Notifier, SharedMemoryDevice};

use crate::backend::{Backend, BackendError, MAX_DIRECT_SEGMENTS, MAX_SLOTS, Op};
use crate::disk::{DiskSpec, SECTOR};

/// Most clients one server serves.
pub const MAX_CLIENTS: usize = 8;
/// Most client requests queued or in flight at once, over all clients.
pub const MAX_REQUESTS: usize = 32;
/// Largest queue size offered to a client.
pub const MAX_CLIENT_QUEUE: u16 = 256;

/// Why the server stopped serving a client until it resets the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// The ring broke the virtqueue rules (the library's device side refused a chain: loops,
    /// bad indexes, buffers outside the data area, readable after writable...).
    Queue(virtio::Error),
    /// A chain with fewer than 16 device-readable bytes: no request header (§5.2.6).
    NoHeader,
    /// A chain with no device-writable byte: nowhere to put the status (§5.2.6).
    NoStatus,
    /// Completing a request failed (the used ring could not be written).
    Completion(virtio::Error),
}

/// Where a client stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Not (yet) DRIVER_OK, or reset: nothing is served.
    Idle,
    /// DRIVER_OK with its queue enabled: requests are served.
    Serving,
    /// Stopped until the client resets the device.
    Broken(Broken),
}

/// Counters per client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Requests completed with OK.
    pub ok: u64,
    /// Requests completed with IOERR (refused by policy, or failed on the real device).
    pub io_errors: u64,
    /// Requests refused by policy (out of range, read-only, misaligned): never reached the
    /// real device. Included in `io_errors`.
    pub refused: u64,
    /// Requests completed with UNSUPP.
    pub unsupported: u64,
    /// Device resets by the client.
    pub resets: u32,
    /// Times service was stopped because the client broke the rules.
    pub breaks: u32,
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
    disk: DiskSpec,
    id: [u8; blk::ID_BYTES],
    queue: Option<ClientQueue<'a>>,
    state: ClientState,
    epoch: u32,
    interrupt: bool,
    stats: ClientStats,
    /// Bus address at which the real device reaches byte 0 of the data area, if it can (the
    /// server is the DMA owner of the client's region): zero copy.
    dma_base: Option<u64>,
    /// Zero-copy requests of this client on the device.
    direct_on_device: u32,
}

impl<N> Client<'_, N> {
    /// Writes `status` as the chain's last writable byte, counts it, and returns the chain to
    /// the client's queue with `data` bytes written before the status byte.
    fn complete(&mut self, chain: &Chain, status: u8, data: u32) -> virtio::Result<()> {
        match status {
            blk::status::OK => self.stats.ok += 1,
            blk::status::UNSUPP => self.stats.unsupported += 1,
            _ => self.stats.io_errors += 1,
        }
        write_writable(chain, &self.area, chain.writable_len() - 1, &[status])?;
        let queue = self.queue.as_mut().ok_or(virtio::Error::QueueUnavailable)?;
        // The status byte is the last byte written: it counts in the used length.
        queue.queue().push(chain, data + 1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    Flush,
}

/// A client request accepted and not yet completed. Its chain is kept apart, in
/// `Server::chains` at the same index, so a pop fills it in place.
struct Request {
    client: usize,
    epoch: u32,
    seq: u64,
    kind: Kind,
    /// First sector on the real disk.
    sector: u64,
    /// Data bytes.
    bytes: u64,
    /// Data bytes handed to the backend so far (a flush: 1 once issued).
    issued: u64,
    /// Backend requests not yet finished.
    outstanding: u16,
    failed: bool,
    /// Issued on the client's own buffers (zero copy), as one backend request.
    direct: bool,
}

impl Request {
    fn fully_issued(&self) -> bool {
        match self.kind {
            Kind::Flush => self.issued > 0,
            _ => self.issued >= self.bytes,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct SlotUse {
    request: usize,
    client: usize,
    offset: u64,
    len: usize,
    /// The data went straight to or from the client's buffers: nothing to copy.
    direct: bool,
}

/// The block server: clients, queued requests and the backend.
///
/// Every pass runs on each wake-up and, while the server polls, many times per request, so
/// its bookkeeping costs what there is to do, not what there could be: bit masks of live
/// requests and busy slots, a queue of requests with work to issue, counters of zero-copy
/// requests per client. Chains stay where they were popped.
pub struct Server<'a, B, N> {
    backend: B,
    clients: [Option<Client<'a, N>>; MAX_CLIENTS],
    requests: [Option<Request>; MAX_REQUESTS],
    /// Bit r: `requests[r]` is live.
    live: u32,
    chains: [Chain; MAX_REQUESTS],
    slots: [Option<SlotUse>; MAX_SLOTS],
    /// Bit s: `slots[s]` is on the backend.
    busy_slots: u64,
    /// Requests with parts (or a flush) still to hand to the backend, in arrival order.
    waiting: Waiting,
    /// An epoch ended since the last pass: requests of the old epoch with nothing in flight
    /// are to be dropped.
    sweep: bool,
    seq: u64,
    next_client: usize,
}

/// Request indexes in arrival order, each at most once. An entry may outlive its request
/// (`issue` drops such entries when it meets them), so an index in the queue is not
/// necessarily live.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    entries: [u8; MAX_REQUESTS],
    len: usize,
}

impl Waiting {
    /// Queues newly accepted request `r` at the tail; an entry left by the index's previous
    /// request goes.
    fn push_new(&mut self, r: usize) {
        if let Some(at) = self.position(r) {
            self.remove(at);
        }
        self.requeue(r);
    }

    /// Queues request `r` again (a write that still needs its flush), keeping its place if it
    /// has one.
    fn requeue(&mut self, r: usize) {
        if self.len < MAX_REQUESTS && self.position(r).is_none() {
            self.entries[self.len] = r as u8;
            self.len += 1;
        }
    }

    fn position(&self, r: usize) -> Option<usize> {
        self.entries[..self.len]
            .iter()
            .position(|&e| usize::from(e) == r)
    }

    fn remove(&mut self, at: usize) {
        self.entries.copy_within(at + 1..self.len, at);
        self.len -= 1;
    }
}

impl<B, N> core::fmt::Debug for Server<'_, B, N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Server")
            .field(
                "clients",
                &self.clients.iter().filter(|c| c.is_some()).count(),
            )
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl<B, N> Server<'_, B, N> {
    /// Backend requests in flight.
    pub fn in_flight(&self) -> usize {
        self.busy_slots.count_ones() as usize
    }

    /// Client requests accepted and not yet completed.
    pub fn queued(&self) -> usize {
        self.live.count_ones() as usize
    }
}

/// What a pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Something happened (worth another pass).
    pub busy: bool,
    /// A client got a completion (it has work now: the caller should let it run).
    pub completed: bool,
}

/// An immediate answer to a chain, without the backend.
enum Immediate {
    Status(u8),
    Id,
}

impl<'a, B: Backend, N: Notifier> Server<'a, B, N> {
    /// A server over `backend`, with no clients yet.
    pub fn new(backend: B) -> Self {
        Self {
            backend,
            clients: [const { None }; MAX_CLIENTS],
            requests: [const { None }; MAX_REQUESTS],
            live: 0,
            chains: core::array::from_fn(|_| Chain::empty()),
            slots: [None; MAX_SLOTS],
            busy_slots: 0,
            waiting: Waiting {
                entries: [0; MAX_REQUESTS],
                len: 0,
            },
            sweep: false,
            seq: 0,
            next_client: 0,
        }
    }

    /// The backend.
    pub fn backend(&mut self) -> &mut B {
        &mut self.backend
    }

    /// Lays out a channel for a client in `region` (`ring_len` bytes of ring area, the rest
    /// after the control block is its data area) exporting `disk`, and tells the client (a
    /// configuration change notification, so a client of a previous server generation
    /// notices the fresh layout). Returns the client's index.
    pub fn add_client(
        &mut self,
        region: DmaRegion<'a>,
        ring_len: usize,
        disk: DiskSpec,
        id: &[u8],
        queue_size: u16,
        notifier: N,
    ) -> virtio::Result<usize> {
        let index = self
            .clients
            .iter()
            .position(Option::is_none)
            .ok_or(virtio::Error::QueueUnavailable)?;
        let config = disk.config_space();
        let description = DeviceDescription {
            device_type: id::BLOCK,
            features: disk.features(),
            num_queues: 1,
            max_queue_size: queue_size.clamp(1, MAX_CLIENT_QUEUE),
            config: &config,
        };
        let mut device = SharedMemoryDevice::new(region, ring_len, &description, notifier)?;
        device.update_config(
            blk::config::CAPACITY,
            &config[blk::config::CAPACITY..blk::config::CAPACITY + 8],
        )?;
        let mut name = [0u8; blk::ID_BYTES];
        let n = id.len().min(blk::ID_BYTES);
        name[..n].copy_from_slice(&id[..n]);
        self.clients[index] = Some(Client {
            area: device.data_area(),
            device,
            disk,
            id: name,
            queue: None,
            state: ClientState::Idle,
            epoch: 0,
            interrupt: false,
            stats: ClientStats::default(),
            dma_base: None,
            direct_on_device: 0,
        });
        Ok(index)
    }

    /// Zero copy for client `index`: the real device reaches the client's region at bus
    /// address `region_bus` (the server is its DMA owner), so reads and writes whose buffers
    /// fit the backend's limits go to the device on the client's buffers instead of through
    /// bounce slots. Returns whether it is on (the backend must take such requests).
    pub fn set_dma_base(&mut self, index: usize, region_bus: u64) -> bool {
        let direct = self.backend.direct_limits().is_some();
        let Some(client) = self.clients.get_mut(index).and_then(Option::as_mut) else {
            return false;
        };
        let len = client.area.memory().len() as u64;
        client.dma_base = region_bus
            .checked_add(client.device.data_offset() as u64)
            .filter(|base| direct && base.checked_add(len).is_some());
        client.dma_base.is_some()
    }

    /// Client `index`'s state.
    pub fn client_state(&self, index: usize) -> Option<ClientState> {
        Some(self.clients.get(index)?.as_ref()?.state)
    }

    /// Client `index`'s counters.
    pub fn client_stats(&self, index: usize) -> Option<ClientStats> {
        Some(self.clients.get(index)?.as_ref()?.stats)
    }

    /// Client `index`'s virtual disk.
    pub fn client_disk(&self, index: usize) -> Option<DiskSpec> {
        Some(self.clients.get(index)?.as_ref()?.disk)
    }

    /// Runs passes until one does nothing.
    pub fn run(&mut self) {
        for _ in 0..10_000 {
            if !self.run_once().busy {
                break;
            }
        }
    }

    /// One pass: control, completions, new chains, issue, notifications.
    pub fn run_once(&mut self) -> Progress {
        let mut busy = false;
        for index in 0..MAX_CLIENTS {
            if self.clients[index].is_some() {
                busy |= self.control(index);
            }
        }
        busy |= self.reap();
        busy |= self.pop_all();
        busy |= self.issue();
        let completed = self.notify_clients();
        debug_assert!(self.bookkeeping_holds());
        Progress { busy, completed }
    }

    /// Whether the masks and counters agree with the tables they summarise (host tests check
    /// it after every pass).
    fn bookkeeping_holds(&self) -> bool {
        let live =
            (0..MAX_REQUESTS).all(|r| self.requests[r].is_some() == (self.live >> r & 1 == 1));
        let busy =
            (0..MAX_SLOTS).all(|s| self.slots[s].is_some() == (self.busy_slots >> s & 1 == 1));
        let direct = (0..MAX_CLIENTS).all(|c| {
            let on_device = self
                .slots
                .iter()
                .flatten()
                .filter(|u| u.direct && u.client == c)
                .count();
            self.clients[c]
                .as_ref()
                .is_none_or(|client| client.direct_on_device as usize == on_device)
        });
        let waiting = (0..MAX_REQUESTS).all(|r| {
            let has_work = self.requests[r]
                .as_ref()
                .is_some_and(|req| !req.fully_issued() && !req.failed && self.current(req));
            !has_work || self.waiting.position(r).is_some()
        });
        live && busy && direct && waiting
    }

    /// Answers client `index`'s control requests.
    fn control(&mut self, index: usize) -> bool {
        let Some(client) = self.clients[index].as_mut() else {
            return false;
        };
        let on_device = client.direct_on_device > 0;
        let _ = client.device.take_kicks();
        if on_device && client.device.reset_pending().unwrap_or(false) {
            // The device still reads or writes this client's buffers: answer the reset once
            // it is done (a later pass), so nothing touches them after the reset (§2.4).
            return false;
        }
        let events = match client.device.process_requests() {
            Ok(events) => events,
            // The control block is the server's own layout; failing to access it means the
            // region itself is unusable: stop serving this client.
            Err(e) => {
                if client.state != ClientState::Broken(Broken::Queue(e)) {
                    client.stats.breaks += 1;
                    self.end_epoch(index, ClientState::Broken(Broken::Queue(e)));
                }
                return false;
            }
        };
        let mut busy = false;
        if events.reset || events.failed {
            if events.reset {
                client.stats.resets += 1;
            }
            self.end_epoch(index, ClientState::Idle);
            busy = true;
        }
        let Some(client) = self.clients[index].as_mut() else {
            return busy;
        };
        if events.queues_enabled & 1 != 0 {
            let queue = if client.device.negotiated().has(bits::RING_PACKED) {
                client.device.packed_queue(0).map(ClientQueue::Packed)
            } else {
                client.device.split_queue(0).map(ClientQueue::Split)
            };
            client.queue = queue.ok();
            busy = true;
        }
        if events.driver_ok && client.queue.is_some() {
            client.state = ClientState::Serving;
            busy = true;
        }
        busy
    }

    /// Ends client `index`'s epoch in `state`: its queue goes, requests of the old epoch are
    /// never completed to it, and the next `issue` drops those with nothing in flight.
    fn end_epoch(&mut self, index: usize, state: ClientState) {
        if let Some(client) = self.clients[index].as_mut() {
            client.state = state;
            client.epoch = client.epoch.wrapping_add(1);
            client.queue = None;
            self.sweep = true;
        }
    }

    /// Stops serving client `index` until it resets.
    fn break_client(&mut self, index: usize, why: Broken) {
        self.end_epoch(index, ClientState::Broken(why));
        if let Some(client) = self.clients[index].as_mut() {
            client.stats.breaks += 1;
            let _ = client.device.set_needs_reset();
        }
    }

    /// Puts `use_` on backend slot `slot`, with the busy mask and the client's count of
    /// zero-copy requests on the device.
    fn occupy(&mut self, slot: usize, use_: SlotUse) {
        self.busy_slots |= 1 << slot;
        if use_.direct
            && let Some(client) = self.clients[use_.client].as_mut()
        {
            client.direct_on_device += 1;
        }
        self.slots[slot] = Some(use_);
    }

    /// Takes what backend slot `slot` held, keeping the same.
    fn release(&mut self, slot: usize) -> Option<SlotUse> {
        let use_ = self.slots.get_mut(slot).and_then(Option::take)?;
        self.busy_slots &= !(1 << slot);
        if use_.direct
            && let Some(client) = self.clients[use_.client].as_mut()
        {
            client.direct_on_device = client.direct_on_device.saturating_sub(1);
        }
        Some(use_)
    }

    /// Takes request `r` out of the table, with the live mask.
    fn free_request(&mut self, r: usize) -> Option<Request> {
        self.live &= !(1 << r);
        self.requests[r].take()
    }

    /// Takes new chains from serving clients, round robin, while request entries are free.
    fn pop_all(&mut self) -> bool {
        let mut busy = false;
        let mut idle_rounds = 0;
        while idle_rounds < MAX_CLIENTS {
            let index = self.next_client;
            self.next_client = (self.next_client + 1) % MAX_CLIENTS;
            if self.live == u32::MAX {
                break;
            }
            if self.pop_one(index) {
                busy = true;
                idle_rounds = 0;
            } else {
                idle_rounds += 1;
            }
        }
        busy
    }

    /// Takes and handles one chain of client `index`; whether there was one.
    fn pop_one(&mut self, index: usize) -> bool {
        let Some(client) = self.clients[index].as_mut() else {
            return false;
        };
        if client.state != ClientState::Serving {
            return false;
        }
        let Some(queue) = client.queue.as_mut() else {
            return false;
        };
        // The chain goes straight into a free request entry's storage.
        let r = (!self.live).trailing_zeros() as usize;
        let Some(chain) = self.chains.get_mut(r) else {
            return false;
        };
        let popped = match queue.queue().pop_into(chain) {
            Ok(true) => Ok(()),
            Ok(false) => {
                // Ask for a notification, then re-check (§2.7.10): a chain that arrived in
                // between is taken now rather than after the next kick.
                match queue.queue().enable_notifications() {
                    Ok(true) => return true,
                    Ok(false) => return false,
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        match popped {
            Ok(()) => self.accept(index, r),
            Err(e) => self.break_client(index, Broken::Queue(e)),
        }
        true
    }

    /// Checks the chain popped into entry `r` against the client's disk; completes it at once
    /// or queues it as request `r`.
    fn accept(&mut self, index: usize, r: usize) {
        let Some(client) = self.clients[index].as_ref() else {
            return;
        };
        let (area, disk, epoch) = (client.area, client.disk, client.epoch);
        let chain = &self.chains[r];
        let (readable, writable) = (chain.readable_len(), chain.writable_len());
        if readable < blk::RequestHeader::SIZE as u64 {
            return self.break_client(index, Broken::NoHeader);
        }
        if writable < 1 {
            return self.break_client(index, Broken::NoStatus);
        }
        let mut header = [0u8; blk::RequestHeader::SIZE];
        if chain.reader(&area).read_exact(&mut header).is_err() {
            return self.break_client(index, Broken::NoHeader);
        }
        let header = blk::RequestHeader::from_bytes(&header);
        // Data bytes: after the header for a write; before the status byte for a read.
        let (kind, bytes) = match header.request_type {
            blk::request_type::IN => (Kind::Read, writable - 1),
            blk::request_type::OUT => (Kind::Write, readable - 16),
            blk::request_type::FLUSH if disk.read_only => {
                // Nothing this client can have written: nothing to make durable.
                return self.complete_now(index, r, Immediate::Status(blk::status::OK));
            }
            blk::request_type::FLUSH => (Kind::Flush, 0),
            blk::request_type::GET_ID => return self.complete_now(index, r, Immediate::Id),
            _ => {
                return self.complete_now(index, r, Immediate::Status(blk::status::UNSUPP));
            }
        };
        let sector = if kind == Kind::Flush {
            Some(0)
        } else if !bytes.is_multiple_of(SECTOR) || (kind == Kind::Write && disk.read_only) {
            None
        } else {
            disk.translate(header.sector, bytes / SECTOR)
        };
        let Some(sector) = sector else {
            if let Some(client) = self.clients[index].as_mut() {
                client.stats.refused += 1;
            }
            return self.complete_now(index, r, Immediate::Status(blk::status::IOERR));
        };
        if bytes == 0 && kind != Kind::Flush {
            return self.complete_now(index, r, Immediate::Status(blk::status::OK));
        }
        let direct = kind != Kind::Flush
            && self.clients[index]
                .as_ref()
                .is_some_and(|c| c.dma_base.is_some())
            && self.backend.direct_limits().is_some_and(|limits| {
                direct_fits(&self.chains[r], kind == Kind::Read, bytes, limits)
            });
        self.seq += 1;
        self.requests[r] = Some(Request {
            client: index,
            epoch,
            seq: self.seq,
            kind,
            sector,
            bytes,
            issued: 0,
            outstanding: 0,
            failed: false,
            direct,
        });
        self.live |= 1 << r;
        self.waiting.push_new(r);
    }

    /// Completes the chain in entry `r` without the backend (`r` stays free).
    fn complete_now(&mut self, index: usize, r: usize, answer: Immediate) {
        let chain = &self.chains[r];
        let Some(client) = self.clients[index].as_mut() else {
            return;
        };
        let status_at = chain.writable_len() - 1;
        let (status, data) = match answer {
            Immediate::Status(status) => (status, 0),
            Immediate::Id => {
                let n = (status_at as usize).min(blk::ID_BYTES);
                if write_writable(chain, &client.area, 0, &client.id[..n]).is_err() {
                    return self.break_client(index, Broken::NoStatus);
                }
                (blk::status::OK, n as u32)
            }
        };
        match client.complete(chain, status, data) {
            Ok(()) => client.interrupt = true,
            Err(e) => self.break_client(index, Broken::Completion(e)),
        }
    }

    /// Whether request `r` belongs to its client's current epoch.
    fn current(&self, r: &Request) -> bool {
        self.clients[r.client]
            .as_ref()
            .is_some_and(|c| c.epoch == r.epoch && c.state == ClientState::Serving)
    }

    /// Reaps finished backend requests.
    fn reap(&mut self) -> bool {
        let mut busy = false;
        while let Some((slot, ok)) = self.backend.poll() {
            busy = true;
            let Some(use_) = self.release(slot) else {
                continue;
            };
            let Some(request) = self.requests[use_.request].as_ref() else {
                continue;
            };
            let mut failed = !ok;
            if ok && request.kind == Kind::Read && !use_.direct && self.current(request) {
                // Copy the data out of the bounce slot into the client's buffers.
                let copied = match (
                    self.backend.slot_buffer(slot),
                    self.clients[request.client].as_ref(),
                ) {
                    (Some(buffer), Some(client)) => copy_into_chain(
                        &self.chains[use_.request],
                        &client.area,
                        use_.offset,
                        &buffer,
                        use_.len,
                    ),
                    _ => Err(virtio::Error::OutOfBounds),
                };
                failed |= copied.is_err();
            }
            if let Some(request) = self.requests[use_.request].as_mut() {
                request.outstanding -= 1;
                request.failed |= failed;
            }
            self.finish_if_done(use_.request);
        }
        busy
    }

    /// Completes (or drops, if its epoch is gone) request `r` once nothing of it is pending.
    fn finish_if_done(&mut self, r: usize) {
        let Some(request) = self.requests[r].as_ref() else {
            return;
        };
        let current = self.current(request);
        let done =
            request.outstanding == 0 && (request.fully_issued() || request.failed || !current);
        if !done {
            return;
        }
        // §5.2.6.2: when the client did not negotiate VIRTIO_BLK_F_FLUSH (which is always
        // offered), a completed write must already be stable: follow it with a flush of the
        // real device and complete it only after that.
        let write_through = current
            && request.kind == Kind::Write
            && !request.failed
            && self.clients[request.client]
                .as_ref()
                .is_some_and(|c| !c.device.negotiated().has(blk::features::FLUSH));
        if write_through {
            if let Some(request) = self.requests[r].as_mut() {
                request.kind = Kind::Flush;
                request.issued = 0;
                request.direct = false;
            }
            self.waiting.requeue(r);
            return;
        }
        let Some(request) = self.free_request(r) else {
            return;
        };
        if !current {
            return;
        }
        let (status, data) = if request.failed {
            (blk::status::IOERR, 0)
        } else if request.kind == Kind::Read {
            (blk::status::OK, request.bytes as u32)
        } else {
            (blk::status::OK, 0)
        };
        let index = request.client;
        let Some(client) = self.clients[index].as_mut() else {
            return;
        };
        match client.complete(&self.chains[r], status, data) {
            Ok(()) => client.interrupt = true,
            Err(e) => self.break_client(index, Broken::Completion(e)),
        }
    }

    /// Whether request `r` is a flush that must still wait for earlier requests of its client.
    fn flush_blocked(&self, r: &Request) -> bool {
        r.kind == Kind::Flush
            && self.requests.iter().flatten().any(|other| {
                other.client == r.client && other.epoch == r.epoch && other.seq < r.seq
            })
    }

    /// Issues queued work to the backend, oldest first, while slots are free.
    fn issue(&mut self) -> bool {
        let mut busy = false;
        if core::mem::take(&mut self.sweep) {
            // Requests whose epoch ended and that have nothing in flight are dropped now.
            for r in 0..MAX_REQUESTS {
                if self.requests[r]
                    .as_ref()
                    .is_some_and(|req| !self.current(req) && req.outstanding == 0)
                {
                    self.free_request(r);
                    busy = true;
                }
            }
        }
        let mut issued_any = false;
        let mut at = 0;
        // Each turn issues one part of the request at `at`, or moves past it, or drops it
        // from the queue once nothing of it is left to issue.
        while at < self.waiting.len {
            let r = usize::from(self.waiting.entries[at]);
            let Some(req) = self.requests[r].as_ref() else {
                self.waiting.remove(at);
                continue;
            };
            if req.fully_issued() || req.failed || !self.current(req) {
                self.waiting.remove(at);
                continue;
            }
            if self.flush_blocked(req) {
                at += 1;
                continue;
            }
            // A bounce part needs a tag with a slot buffer; a zero-copy request any tag.
            let direct = req.direct;
            let tags = if direct {
                self.backend.tags()
            } else {
                self.backend.slots()
            };
            let usable = match tags.min(MAX_SLOTS) {
                MAX_SLOTS => u64::MAX,
                n => (1u64 << n) - 1,
            };
            let free = usable & !self.busy_slots;
            if free == 0 {
                break;
            }
            let slot = free.trailing_zeros() as usize;
            let issued = if direct {
                self.issue_direct(r, slot)
            } else {
                self.issue_part(r, slot)
            };
            match issued {
                Ok(()) => {
                    busy = true;
                    issued_any = true;
                }
                Err(BackendError::Busy) => break,
                Err(BackendError::Failed) => {
                    if let Some(req) = self.requests[r].as_mut() {
                        req.failed = true;
                    }
                    self.finish_if_done(r);
                    busy = true;
                }
            }
        }
        if issued_any {
            self.backend.kick();
        }
        busy
    }

    /// Issues the next part of request `r` on bounce slot `slot`.
    fn issue_part(&mut self, r: usize, slot: usize) -> Result<(), BackendError> {
        let slot_len = self.backend.slot_len() as u64;
        let request = self.requests[r].as_ref().ok_or(BackendError::Failed)?;
        let offset = request.issued;
        let len = (request.bytes - offset).min(slot_len) as usize;
        let sector = request.sector + offset / SECTOR;
        let op = match request.kind {
            Kind::Read => Op::Read,
            Kind::Write => Op::Write,
            Kind::Flush => Op::Flush,
        };
        if op == Op::Write {
            // Copy the data into the bounce slot now: what the device writes is what the
            // server checked, whatever the client does to its buffers afterwards.
            let client = self.clients[request.client]
                .as_ref()
                .ok_or(BackendError::Failed)?;
            let buffer = self.backend.slot_buffer(slot).ok_or(BackendError::Failed)?;
            copy_from_chain(
                &self.chains[r],
                &client.area,
                blk::RequestHeader::SIZE as u64 + offset,
                &buffer,
                len,
            )
            .map_err(|_| BackendError::Failed)?;
        }
        let client = request.client;
        self.backend.submit(slot, op, sector, len)?;
        self.occupy(
            slot,
            SlotUse {
                request: r,
                client,
                offset,
                len,
                direct: false,
            },
        );
        if let Some(request) = self.requests[r].as_mut() {
            request.outstanding += 1;
            request.issued = if op == Op::Flush {
                1
            } else {
                offset + len as u64
            };
        }
        Ok(())
    }

    /// Issues request `r` whole on tag `tag`, on the client's own buffers (zero copy): the
    /// data segments of its chain, already checked to lie in the client's data area when the
    /// chain was popped, translated to the device's bus addresses. The header the device sees
    /// is the server's (built from the checked request), and so is the status byte.
    fn issue_direct(&mut self, r: usize, tag: usize) -> Result<(), BackendError> {
        let request = self.requests[r].as_ref().ok_or(BackendError::Failed)?;
        let client = self.clients[request.client]
            .as_ref()
            .ok_or(BackendError::Failed)?;
        let base = client.dma_base.ok_or(BackendError::Failed)?;
        let (_, max_len) = self.backend.direct_limits().ok_or(BackendError::Failed)?;
        let max_len = max_len.max(SECTOR as u32) as usize;
        let (op, writable, skip) = match request.kind {
            Kind::Read => (Op::Read, true, 0),
            Kind::Write => (Op::Write, false, blk::RequestHeader::SIZE as u64),
            Kind::Flush => return Err(BackendError::Failed),
        };
        let mut data = [Buffer { addr: 0, len: 0 }; MAX_DIRECT_SEGMENTS];
        let mut n = 0;
        walk(
            &self.chains[r],
            writable,
            skip,
            request.bytes as usize,
            |at, _, len| {
                // A segment longer than the device takes is several descriptors.
                for piece in (0..len).step_by(max_len) {
                    let slot = data.get_mut(n).ok_or(virtio::Error::ChainTooLong)?;
                    *slot = Buffer {
                        addr: base + (at + piece) as u64,
                        len: (len - piece).min(max_len) as u32,
                    };
                    n += 1;
                }
                Ok(())
            },
        )
        .map_err(|_| BackendError::Failed)?;
        let (sector, bytes, index) = (request.sector, request.bytes, request.client);
        self.backend.submit_direct(tag, op, sector, &data[..n])?;
        self.occupy(
            tag,
            SlotUse {
                request: r,
                client: index,
                offset: 0,
                len: bytes as usize,
                direct: true,
            },
        );
        if let Some(request) = self.requests[r].as_mut() {
            request.outstanding += 1;
            request.issued = bytes;
        }
        Ok(())
    }

    /// Sends used buffer notifications where clients asked for them (§2.7.7, §2.7.10).
    /// Whether any client got a completion.
    fn notify_clients(&mut self) -> bool {
        let mut completed = false;
        for client in self.clients.iter_mut().flatten() {
            if !core::mem::take(&mut client.interrupt) {
                continue;
            }
            completed = true;
            let wanted = match client.queue.as_mut() {
                Some(queue) => queue.queue().should_interrupt().unwrap_or(true),
                None => false,
            };
            if wanted {
                let _ = client.device.interrupt(0);
            }
        }
        completed
    }
}

/// Walks the segments of `chain` with the given direction from byte `offset` of that part,
/// calling `each(area_offset, segment_position, len)` for `len` bytes in total.
fn walk(
    chain: &Chain,
    writable: bool,
    offset: u64,
    len: usize,
    mut each: impl FnMut(usize, usize, usize) -> virtio::Result<()>,
) -> virtio::Result<()> {
    let mut skip = offset;
    let mut done = 0usize;
    for segment in chain.segments().iter().filter(|s| s.writable == writable) {
        if done == len {
            break;
        }
        let seg_len = u64::from(segment.len);
        if skip >= seg_len {
            skip -= seg_len;
            continue;
        }
        let take = ((seg_len - skip) as usize).min(len - done);
        each(segment.offset + skip as usize, done, take)?;
        done += take;
        skip = 0;
    }
    if done == len {
        Ok(())
    } else {
        Err(virtio::Error::OutOfBounds)
    }
}

/// Whether a read (`writable` data) or write of `bytes` data bytes can go to the device on the
/// chain's own buffers within the backend's `(segments, longest segment)` limits, a segment
/// longer than the limit counting as several.
fn direct_fits(
    chain: &Chain,
    writable: bool,
    bytes: u64,
    (max_segments, max_len): (usize, u32),
) -> bool {
    let skip = if writable {
        0
    } else {
        blk::RequestHeader::SIZE as u64
    };
    let max_len = max_len.max(SECTOR as u32) as usize;
    let mut segments = 0usize;
    let walked = walk(chain, writable, skip, bytes as usize, |_, _, len| {
        // A segment longer than the device takes is several descriptors.
        segments += len.div_ceil(max_len);
        Ok(())
    });
    walked.is_ok() && segments <= max_segments.min(MAX_DIRECT_SEGMENTS)
}

/// Copies `len` bytes of the chain's readable part from `offset` into `dst` from 0 (client
/// memory straight into the bounce slot: both are shared memory, accessed only through
/// volatile copies).
fn copy_from_chain(
    chain: &Chain,
    area: &GrantedArea<'_>,
    offset: u64,
    dst: &DmaRegion<'_>,
    len: usize,
) -> virtio::Result<()> {
    walk(chain, false, offset, len, |at, pos, n| {
        dst.copy_from_region(pos, area.memory(), at, n)
    })
}

/// Copies `len` bytes of `src` from 0 into the chain's writable part from `offset`.
fn copy_into_chain(
    chain: &Chain,
    area: &GrantedArea<'_>,
    offset: u64,
    src: &DmaRegion<'_>,
    len: usize,
) -> virtio::Result<()> {
    walk(chain, true, offset, len, |at, pos, n| {
        area.memory().copy_from_region(at, src, pos, n)
    })
}

/// Writes `bytes` into the chain's writable part at `offset`.
fn write_writable(
    chain: &Chain,
    area: &GrantedArea<'_>,
    offset: u64,
    bytes: &[u8],
) -> virtio::Result<()> {
    walk(chain, true, offset, bytes.len(), |at, pos, n| {
        area.memory().write_bytes(at, &bytes[pos..pos + n])
    })
}
