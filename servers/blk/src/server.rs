//! The block class: clients' virtio-blk queues (§5.2) in, backend requests out, on the
//! I/O-server framework (`ioserver`: channels, state machine, round robin, notifications,
//! main loop).
//!
//! In each pass of the framework, the class:
//! 1. reaps finished backend requests ([`DeviceClass::poll_device`]), copies read data into
//!    the client's buffers and completes client requests whose every part finished;
//! 2. in each serving client's turn, takes one chain ([`DeviceClass::serve`]; turns go round
//!    while request entries are free), checks it against the client's virtual disk,
//!    completes refused ones at once (IOERR, UNSUPP) and queues the rest;
//! 3. issues queued work to the backend in arrival order ([`DeviceClass::finish_pass`]), one
//!    bounce slot per part (a client request larger than a slot is split), or, for a client
//!    whose data area the device can reach (zero copy, [`DeviceClass::dma_reachable`]), the
//!    whole request on the client's buffers; a flush only once the same client's earlier
//!    requests completed.
//!
//! Client errors never reach the real device: a request outside the virtual disk, a write to
//! a read-only disk or a length that is not a whole number of sectors completes with
//! VIRTIO_BLK_S_IOERR; an unknown request type with VIRTIO_BLK_S_UNSUPP. A chain that breaks
//! the ring protocol, or one without room for a header and a status byte, stops service to
//! that client (DEVICE_NEEDS_RESET, §2.1.2) until it resets the device; other clients are not
//! affected. A reset or break bumps the client's epoch ([`DeviceClass::stopped`]): backend
//! requests still in flight for the old epoch finish into their bounce slots and are dropped,
//! never copied into the client's memory. A zero-copy request still on the device when its
//! client asks for a reset holds the reset's answer back until the device has finished with
//! the client's buffers (§2.4, [`DeviceClass::may_reset`]).

use core::fmt;

use ioserver::chain::{copy_from_chain, copy_into_chain, walk, write_writable};
use ioserver::{
    Channel, Clients, DeviceClass, DeviceInterrupts, MAX_CONFIG, Progress, Ready, Settings, Turn,
    Visit,
};
use virtio::devices::{blk, id};
use virtio::features::Features;
use virtio::queue::{Buffer, Chain};
use virtio::transport::shmem::Notifier;

use crate::backend::{Backend, BackendError, MAX_DIRECT_SEGMENTS, MAX_SLOTS, Op};
use crate::disk::{DiskSpec, SECTOR, SpecError};

pub use ioserver::MAX_CLIENTS;

/// Most client requests queued or in flight at once, over all clients.
pub const MAX_REQUESTS: usize = 32;
/// Largest queue size offered to a client.
pub const MAX_CLIENT_QUEUE: u16 = 256;
/// The only queue of a client's device: its requestq.
const REQUEST_QUEUE: u16 = 0;

/// The block class's own reasons to stop serving a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlkRule {
    /// A chain with fewer than 16 device-readable bytes: no request header (§5.2.6).
    NoHeader,
    /// A chain with no device-writable byte: nowhere to put the status (§5.2.6).
    NoStatus,
}

/// Why the server stopped serving a client until it resets the device.
pub type Broken = ioserver::Broken<BlkRule>;
/// Where a client stands.
pub type ClientState = ioserver::ClientState<BlkRule>;
/// A client's counters.
pub type ClientStats = ioserver::ClientStats<BlockStats>;
/// The block server.
pub type Server<'a, B, N> = ioserver::Server<'a, N, Block<'a, B>>;

/// The block counters per client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockStats {
    /// Requests completed with OK.
    pub ok: u64,
    /// Requests completed with IOERR (refused by policy, or failed on the real device).
    pub io_errors: u64,
    /// Requests refused by policy (out of range, read-only, misaligned): never reached the
    /// real device. Included in `io_errors`.
    pub refused: u64,
    /// Requests completed with UNSUPP.
    pub unsupported: u64,
}

/// What the description grants a client: its virtual disk, and the id its device reports
/// (VIRTIO_BLK_T_GET_ID: the channel's name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSpec {
    /// The virtual disk.
    pub disk: DiskSpec,
    /// The device id, zero-padded.
    pub id: [u8; blk::ID_BYTES],
}

impl BlockSpec {
    /// `disk`, with the device id `id` (cut to [`blk::ID_BYTES`]).
    pub fn new(disk: DiskSpec, id: &[u8]) -> Self {
        let mut name = [0u8; blk::ID_BYTES];
        let n = id.len().min(blk::ID_BYTES);
        name[..n].copy_from_slice(&id[..n]);
        Self { disk, id: name }
    }
}

/// The real device's name as the description gives it, kept inline (no allocator).
#[derive(Clone, Copy)]
struct DeviceName {
    bytes: [u8; 64],
    len: usize,
}

impl DeviceName {
    fn new(name: &str) -> Self {
        let mut len = name.len().min(64);
        while !name.is_char_boundary(len) {
            len -= 1;
        }
        let mut bytes = [0u8; 64];
        bytes[..len].copy_from_slice(&name.as_bytes()[..len]);
        Self { bytes, len }
    }

    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

/// The class's state per client: its virtual disk and its epoch.
pub struct VirtualDisk {
    spec: BlockSpec,
    /// The real device's name (for the log).
    device: DeviceName,
    /// Bumped when the client's epoch ends (reset, FAILED, break).
    epoch: u32,
    /// Bus address at which the real device reaches byte 0 of the data area, if it can (the
    /// server is the DMA owner of the client's region): zero copy.
    dma_base: Option<u64>,
    /// Zero-copy requests of this client on the device.
    direct_on_device: u32,
}

impl VirtualDisk {
    /// The virtual disk.
    pub fn disk(&self) -> DiskSpec {
        self.spec.disk
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    Flush,
}

/// A client request accepted and not yet completed. Its chain is kept apart, in
/// `Block::chains` at the same index, so a pop fills it in place.
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

/// The engine's tables: client requests accepted and not yet completed, their chains, and
/// what each backend slot holds. They are the bulk of the class (a chain holds 64 segments),
/// so the class borrows them: the partition keeps them once, where they were made, while the
/// class itself moves into the server.
pub struct Tables {
    requests: [Option<Request>; MAX_REQUESTS],
    chains: [Chain; MAX_REQUESTS],
    slots: [Option<SlotUse>; MAX_SLOTS],
}

impl Tables {
    /// Empty tables.
    pub fn new() -> Self {
        Self {
            requests: [const { None }; MAX_REQUESTS],
            chains: core::array::from_fn(|_| Chain::empty()),
            slots: [None; MAX_SLOTS],
        }
    }
}

impl Default for Tables {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Tables {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tables").finish_non_exhaustive()
    }
}

/// The block class: the backend, and the requests of every client on their way to it.
///
/// Every pass runs on each wake-up and, while the server polls, many times per request, so
/// its bookkeeping costs what there is to do, not what there could be: bit masks of live
/// requests and busy slots, a queue of requests with work to issue, counters of zero-copy
/// requests per client. Chains stay where they were popped.
pub struct Block<'t, B> {
    backend: B,
    t: &'t mut Tables,
    /// The real device's name (a channel whose `disk` names another is not served).
    device: DeviceName,
    /// Largest queue offered to a client.
    queue_depth: u16,
    /// Bit r: `requests[r]` is live.
    live: u32,
    /// Bit s: `slots[s]` is on the backend.
    busy_slots: u64,
    /// Requests with parts (or a flush) still to hand to the backend, in arrival order.
    waiting: Waiting,
    /// An epoch ended since the last pass: requests of the old epoch with nothing in flight
    /// are to be dropped.
    sweep: bool,
    seq: u64,
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

impl<B> fmt::Debug for Block<'_, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Block")
            .field("device", &self.device.as_str())
            .field("in_flight", &self.in_flight())
            .field("queued", &self.queued())
            .finish()
    }
}

impl<B> Block<'_, B> {
    /// Backend requests in flight.
    pub fn in_flight(&self) -> usize {
        self.busy_slots.count_ones() as usize
    }

    /// Client requests accepted and not yet completed.
    pub fn queued(&self) -> usize {
        self.live.count_ones() as usize
    }
}

/// An immediate answer to a chain, without the backend.
enum Immediate {
    Status(u8),
    Id,
}

impl<'t, B: Backend> Block<'t, B> {
    /// The class over `backend` with `tables`, the real device named `device` in the
    /// description, offering clients queues of up to `queue_depth` entries.
    pub fn new(backend: B, tables: &'t mut Tables, device: &str, queue_depth: u16) -> Self {
        Self {
            backend,
            t: tables,
            device: DeviceName::new(device),
            queue_depth: queue_depth.clamp(1, MAX_CLIENT_QUEUE),
            live: 0,
            busy_slots: 0,
            waiting: Waiting {
                entries: [0; MAX_REQUESTS],
                len: 0,
            },
            sweep: false,
            seq: 0,
        }
    }

    /// The backend.
    pub fn backend(&mut self) -> &mut B {
        &mut self.backend
    }

    /// Whether the masks and counters agree with the tables they summarise (host tests check
    /// it after every pass).
    fn bookkeeping_holds<N: Notifier>(&self, clients: &Clients<'_, N, Self>) -> bool {
        let live =
            (0..MAX_REQUESTS).all(|r| self.t.requests[r].is_some() == (self.live >> r & 1 == 1));
        let busy =
            (0..MAX_SLOTS).all(|s| self.t.slots[s].is_some() == (self.busy_slots >> s & 1 == 1));
        let direct = clients.iter().all(|(c, channel)| {
            let on_device = self
                .t
                .slots
                .iter()
                .flatten()
                .filter(|u| u.direct && u.client == c)
                .count();
            channel.class.direct_on_device as usize == on_device
        });
        let waiting = (0..MAX_REQUESTS).all(|r| {
            let has_work = self.t.requests[r].as_ref().is_some_and(|req| {
                !req.fully_issued() && !req.failed && Self::current(clients, req)
            });
            !has_work || self.waiting.position(r).is_some()
        });
        live && busy && direct && waiting
    }

    /// Writes `status` as the chain's last writable byte, counts it, and returns the chain to
    /// the client's queue with `data` bytes written before the status byte.
    fn complete<N: Notifier>(
        channel: &mut Channel<'_, N, Self>,
        chain: &Chain,
        status: u8,
        data: u32,
    ) -> virtio::Result<()> {
        let stats = channel.stats_mut();
        match status {
            blk::status::OK => stats.ok += 1,
            blk::status::UNSUPP => stats.unsupported += 1,
            _ => stats.io_errors += 1,
        }
        write_writable(chain, channel.area(), chain.writable_len() - 1, &[status])?;
        // The status byte is the last byte written: it counts in the used length.
        channel.push(REQUEST_QUEUE, chain, data + 1)
    }

    /// Whether request `r` belongs to its client's current epoch.
    fn current<N: Notifier>(clients: &Clients<'_, N, Self>, r: &Request) -> bool {
        clients
            .get(r.client)
            .is_some_and(|c| c.class.epoch == r.epoch && c.serving())
    }

    /// Puts `use_` on backend slot `slot`, with the busy mask and the client's count of
    /// zero-copy requests on the device.
    fn occupy<N: Notifier>(
        &mut self,
        clients: &mut Clients<'_, N, Self>,
        slot: usize,
        use_: SlotUse,
    ) {
        self.busy_slots |= 1 << slot;
        if use_.direct
            && let Some(channel) = clients.get_mut(use_.client)
        {
            channel.class.direct_on_device += 1;
        }
        self.t.slots[slot] = Some(use_);
    }

    /// Takes what backend slot `slot` held, keeping the same.
    fn release<N: Notifier>(
        &mut self,
        clients: &mut Clients<'_, N, Self>,
        slot: usize,
    ) -> Option<SlotUse> {
        let use_ = self.t.slots.get_mut(slot).and_then(Option::take)?;
        self.busy_slots &= !(1 << slot);
        if use_.direct
            && let Some(channel) = clients.get_mut(use_.client)
        {
            channel.class.direct_on_device = channel.class.direct_on_device.saturating_sub(1);
        }
        Some(use_)
    }

    /// Takes request `r` out of the table, with the live mask.
    fn free_request(&mut self, r: usize) -> Option<Request> {
        self.live &= !(1 << r);
        self.t.requests[r].take()
    }

    /// Checks the chain popped into entry `r` against the client's disk; completes it at once
    /// or queues it as request `r`.
    fn accept<N: Notifier>(&mut self, clients: &mut Clients<'_, N, Self>, index: usize, r: usize) {
        let Some(channel) = clients.get(index) else {
            return;
        };
        let (area, disk, epoch) = (
            *channel.area(),
            channel.class.spec.disk,
            channel.class.epoch,
        );
        let zero_copy = channel.class.dma_base.is_some();
        let chain = &self.t.chains[r];
        let (readable, writable) = (chain.readable_len(), chain.writable_len());
        if readable < blk::RequestHeader::SIZE as u64 {
            return self.break_client(clients, index, Broken::Class(BlkRule::NoHeader));
        }
        if writable < 1 {
            return self.break_client(clients, index, Broken::Class(BlkRule::NoStatus));
        }
        let mut header = [0u8; blk::RequestHeader::SIZE];
        if chain.reader(&area).read_exact(&mut header).is_err() {
            return self.break_client(clients, index, Broken::Class(BlkRule::NoHeader));
        }
        let header = blk::RequestHeader::from_bytes(&header);
        // Data bytes: after the header for a write; before the status byte for a read.
        let (kind, bytes) = match header.request_type {
            blk::request_type::IN => (Kind::Read, writable - 1),
            blk::request_type::OUT => (Kind::Write, readable - 16),
            blk::request_type::FLUSH if disk.read_only => {
                // Nothing this client can have written: nothing to make durable.
                let ok = Immediate::Status(blk::status::OK);
                return self.complete_now(clients, index, r, ok);
            }
            blk::request_type::FLUSH => (Kind::Flush, 0),
            blk::request_type::GET_ID => {
                return self.complete_now(clients, index, r, Immediate::Id);
            }
            _ => {
                let unsupported = Immediate::Status(blk::status::UNSUPP);
                return self.complete_now(clients, index, r, unsupported);
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
            if let Some(channel) = clients.get_mut(index) {
                channel.stats_mut().refused += 1;
            }
            let refused = Immediate::Status(blk::status::IOERR);
            return self.complete_now(clients, index, r, refused);
        };
        if bytes == 0 && kind != Kind::Flush {
            let ok = Immediate::Status(blk::status::OK);
            return self.complete_now(clients, index, r, ok);
        }
        let direct = kind != Kind::Flush
            && zero_copy
            && self.backend.direct_limits().is_some_and(|limits| {
                direct_fits(&self.t.chains[r], kind == Kind::Read, bytes, limits)
            });
        self.seq += 1;
        self.t.requests[r] = Some(Request {
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
    fn complete_now<N: Notifier>(
        &mut self,
        clients: &mut Clients<'_, N, Self>,
        index: usize,
        r: usize,
        answer: Immediate,
    ) {
        let chain = &self.t.chains[r];
        let Some(channel) = clients.get_mut(index) else {
            return;
        };
        let status_at = chain.writable_len() - 1;
        let (status, data) = match answer {
            Immediate::Status(status) => (status, 0),
            Immediate::Id => {
                let n = (status_at as usize).min(blk::ID_BYTES);
                let id = &channel.class.spec.id[..n];
                if write_writable(chain, channel.area(), 0, id).is_err() {
                    let why = Broken::Class(BlkRule::NoStatus);
                    return self.break_client(clients, index, why);
                }
                (blk::status::OK, n as u32)
            }
        };
        if let Err(e) = Self::complete(channel, chain, status, data) {
            self.break_client(clients, index, Broken::Completion(e));
        }
    }

    /// Reaps finished backend requests.
    fn reap<N: Notifier>(&mut self, clients: &mut Clients<'_, N, Self>) -> bool {
        let mut busy = false;
        while let Some((slot, ok)) = self.backend.poll() {
            busy = true;
            let Some(use_) = self.release(clients, slot) else {
                continue;
            };
            let Some(request) = self.t.requests[use_.request].as_ref() else {
                continue;
            };
            let mut failed = !ok;
            if ok && request.kind == Kind::Read && !use_.direct && Self::current(clients, request) {
                // Copy the data out of the bounce slot into the client's buffers.
                let copied = match (self.backend.slot_buffer(slot), clients.get(request.client)) {
                    (Some(buffer), Some(channel)) => copy_into_chain(
                        &self.t.chains[use_.request],
                        channel.area(),
                        use_.offset,
                        &buffer,
                        use_.len,
                    ),
                    _ => Err(virtio::Error::OutOfBounds),
                };
                failed |= copied.is_err();
            }
            if let Some(request) = self.t.requests[use_.request].as_mut() {
                request.outstanding -= 1;
                request.failed |= failed;
            }
            self.finish_if_done(clients, use_.request);
        }
        busy
    }

    /// Completes (or drops, if its epoch is gone) request `r` once nothing of it is pending.
    fn finish_if_done<N: Notifier>(&mut self, clients: &mut Clients<'_, N, Self>, r: usize) {
        let Some(request) = self.t.requests[r].as_ref() else {
            return;
        };
        let current = Self::current(clients, request);
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
            && clients
                .get(request.client)
                .is_some_and(|c| !c.device().negotiated().has(blk::features::FLUSH));
        if write_through {
            if let Some(request) = self.t.requests[r].as_mut() {
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
        let Some(channel) = clients.get_mut(index) else {
            return;
        };
        if let Err(e) = Self::complete(channel, &self.t.chains[r], status, data) {
            self.break_client(clients, index, Broken::Completion(e));
        }
    }

    /// Whether request `r` is a flush that must still wait for earlier requests of its client.
    fn flush_blocked(&self, r: &Request) -> bool {
        r.kind == Kind::Flush
            && self.t.requests.iter().flatten().any(|other| {
                other.client == r.client && other.epoch == r.epoch && other.seq < r.seq
            })
    }

    /// Issues queued work to the backend, oldest first, while slots are free.
    fn issue<N: Notifier>(&mut self, clients: &mut Clients<'_, N, Self>) -> bool {
        let mut busy = false;
        if core::mem::take(&mut self.sweep) {
            // Requests whose epoch ended and that have nothing in flight are dropped now.
            for r in 0..MAX_REQUESTS {
                if self.t.requests[r]
                    .as_ref()
                    .is_some_and(|req| !Self::current(clients, req) && req.outstanding == 0)
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
            let Some(req) = self.t.requests[r].as_ref() else {
                self.waiting.remove(at);
                continue;
            };
            if req.fully_issued() || req.failed || !Self::current(clients, req) {
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
                self.issue_direct(clients, r, slot)
            } else {
                self.issue_part(clients, r, slot)
            };
            match issued {
                Ok(()) => {
                    busy = true;
                    issued_any = true;
                }
                Err(BackendError::Busy) => break,
                Err(BackendError::Failed) => {
                    if let Some(req) = self.t.requests[r].as_mut() {
                        req.failed = true;
                    }
                    self.finish_if_done(clients, r);
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
    fn issue_part<N: Notifier>(
        &mut self,
        clients: &mut Clients<'_, N, Self>,
        r: usize,
        slot: usize,
    ) -> Result<(), BackendError> {
        let slot_len = self.backend.slot_len() as u64;
        let request = self.t.requests[r].as_ref().ok_or(BackendError::Failed)?;
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
            let channel = clients.get(request.client).ok_or(BackendError::Failed)?;
            let buffer = self.backend.slot_buffer(slot).ok_or(BackendError::Failed)?;
            copy_from_chain(
                &self.t.chains[r],
                channel.area(),
                blk::RequestHeader::SIZE as u64 + offset,
                &buffer,
                len,
            )
            .map_err(|_| BackendError::Failed)?;
        }
        let client = request.client;
        self.backend.submit(slot, op, sector, len)?;
        let use_ = SlotUse {
            request: r,
            client,
            offset,
            len,
            direct: false,
        };
        self.occupy(clients, slot, use_);
        if let Some(request) = self.t.requests[r].as_mut() {
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
    fn issue_direct<N: Notifier>(
        &mut self,
        clients: &mut Clients<'_, N, Self>,
        r: usize,
        tag: usize,
    ) -> Result<(), BackendError> {
        let request = self.t.requests[r].as_ref().ok_or(BackendError::Failed)?;
        let channel = clients.get(request.client).ok_or(BackendError::Failed)?;
        let base = channel.class.dma_base.ok_or(BackendError::Failed)?;
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
            &self.t.chains[r],
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
        let use_ = SlotUse {
            request: r,
            client: index,
            offset: 0,
            len: bytes as usize,
            direct: true,
        };
        self.occupy(clients, tag, use_);
        if let Some(request) = self.t.requests[r].as_mut() {
            request.outstanding += 1;
            request.issued = bytes;
        }
        Ok(())
    }
}

impl<B: Backend> DeviceClass for Block<'_, B> {
    const DEVICE_TYPE: u32 = id::BLOCK;
    const QUEUES: u16 = 1;
    const READY: Ready = Ready::All(1 << REQUEST_QUEUE);
    /// A turn takes one chain; turns go round while request entries are free (immediate
    /// answers take none: a client's whole queue of them is answered in one pass).
    const ROUNDS: usize = MAX_CLIENT_QUEUE as usize;
    type Spec = BlockSpec;
    type Refusal = SpecError;
    type Client = VirtualDisk;
    type Stats = BlockStats;
    type Reason = BlkRule;

    /// `disk` (the real device's name: a channel for another device is not served),
    /// `lba-start`, `lba-count`, `access`; the device id is the channel's name.
    fn spec(&self, config: &dyn Settings) -> Result<BlockSpec, SpecError> {
        if config
            .text("disk")
            .is_some_and(|d| d != self.device.as_str())
        {
            return Err(SpecError::OtherDevice);
        }
        let disk = DiskSpec::from_config(
            config.number("lba-start"),
            config.number("lba-count"),
            config.text("access"),
            self.backend.capacity(),
        )?;
        Ok(BlockSpec::new(
            disk,
            config.channel().unwrap_or("").as_bytes(),
        ))
    }

    fn describe(client: &VirtualDisk, out: &mut dyn fmt::Write) -> fmt::Result {
        let disk = client.spec.disk;
        write!(
            out,
            "virtual disk of {} sectors = {} sectors {}..{}, {}, {}",
            disk.lba_count,
            client.device.as_str(),
            disk.lba_start,
            disk.lba_start + disk.lba_count,
            if disk.read_only {
                "read-only"
            } else {
                "read-write"
            },
            if client.dma_base.is_some() {
                "zero copy"
            } else {
                "bounce buffers"
            }
        )
    }

    /// Zero copy: reads and writes whose buffers fit the backend's limits go to the device
    /// on the client's buffers instead of through bounce slots (if the backend takes such
    /// requests).
    fn dma_reachable(&mut self, _index: usize, client: &mut VirtualDisk, data_bus: u64) -> bool {
        client.dma_base = self.backend.direct_limits().map(|_| data_bus);
        client.dma_base.is_some()
    }

    /// §5.2.3, §5.2.4: the disk's features and configuration space.
    fn offer(&self, spec: &BlockSpec, config: &mut [u8; MAX_CONFIG]) -> (Features, usize) {
        let space = spec.disk.config_space();
        config[..space.len()].copy_from_slice(&space);
        (spec.disk.features(), space.len())
    }

    fn max_queue_size(&self) -> u16 {
        self.queue_depth
    }

    fn admit(
        &mut self,
        _index: usize,
        spec: &BlockSpec,
        _now_ns: u64,
    ) -> Result<VirtualDisk, SpecError> {
        Ok(VirtualDisk {
            spec: *spec,
            device: self.device,
            epoch: 0,
            dma_base: None,
            direct_on_device: 0,
        })
    }

    /// Requests of the old epoch are never completed to the client; the next `issue` drops
    /// those with nothing in flight.
    fn stopped(&mut self, _index: usize, client: &mut VirtualDisk) {
        client.epoch = client.epoch.wrapping_add(1);
        self.sweep = true;
    }

    /// Not while the device still reads or writes the client's buffers: the reset is
    /// answered once it is done (a later pass), so nothing touches them after it (§2.4).
    fn may_reset(&self, _index: usize, client: &VirtualDisk) -> bool {
        client.direct_on_device == 0
    }

    fn poll_device<N: Notifier>(&mut self, clients: &mut Clients<'_, N, Self>, _: u64) -> Progress {
        Progress {
            busy: self.reap(clients),
            ..Progress::default()
        }
    }

    /// Takes and handles one chain of client `index`, while request entries are free.
    fn serve<N: Notifier>(&mut self, visit: Visit<'_, '_, N, Self>) -> Turn {
        let Visit { clients, index, .. } = visit;
        if self.live == u32::MAX {
            return Turn::Idle;
        }
        // The chain goes straight into a free request entry's storage.
        let r = (!self.live).trailing_zeros() as usize;
        let Some(queue) = clients.get_mut(index).and_then(|c| c.queue(REQUEST_QUEUE)) else {
            return Turn::Idle;
        };
        match queue.next_chain_into(&mut self.t.chains[r]) {
            Ok(true) => self.accept(clients, index, r),
            Ok(false) => return Turn::Idle,
            Err(e) => self.break_client(clients, index, Broken::Queue(e)),
        }
        if self.live == u32::MAX {
            Turn::Full
        } else {
            Turn::Worked
        }
    }

    fn finish_pass<N: Notifier>(&mut self, clients: &mut Clients<'_, N, Self>, _: u64) -> Progress {
        let busy = self.issue(clients);
        debug_assert!(self.bookkeeping_holds(clients));
        Progress {
            busy,
            ..Progress::default()
        }
    }

    fn report(stats: &ClientStats, out: &mut dyn fmt::Write) -> fmt::Result {
        write!(
            out,
            "{} ok, {} I/O errors ({} refused), {} unsupported",
            stats.ok, stats.io_errors, stats.refused, stats.unsupported
        )
    }

    fn device(&mut self) -> &mut dyn DeviceInterrupts {
        &mut self.backend
    }

    fn in_flight(&self) -> usize {
        Block::in_flight(self)
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
