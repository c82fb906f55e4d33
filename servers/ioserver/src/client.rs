//! Each client's channel: the VirtIO device it sees (through the library's device side), its
//! queues, where it stands, its counters, and the device class's own per-client state.
//!
//! The state machine is the same for every class (§2.1, §3.1): a reset or FAILED from the
//! client ends its epoch (queues closed, the class drops the work in progress); an enabled
//! queue is opened in the format the client negotiated; DRIVER_OK with the queues the class
//! needs makes the client served. A client that breaks the rules is stopped with
//! DEVICE_NEEDS_RESET (§2.1.2) and its queues stay closed until it resets; no other client
//! notices.

use core::fmt;
use core::ops::{Deref, DerefMut};

use virtio::queue::{Chain, GrantedArea};
use virtio::transport::shmem::{DeviceDescription, Notifier, SharedMemoryDevice};

use crate::DeviceClass;
use crate::queue::ClientQueue;

/// Most clients one server serves.
pub const MAX_CLIENTS: usize = 8;
/// Most queues a client's device has.
pub const MAX_QUEUES: usize = 4;

/// Why the server stopped serving a client until it resets the device.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Broken<R> {
    /// A queue broke the virtqueue rules (the library's device side refused a chain or the
    /// control block: loops, bad indexes, buffers outside the data area...).
    Queue(virtio::Error),
    /// Returning a chain failed (the used ring could not be written).
    Completion(virtio::Error),
    /// A rule of the device class (a request without a header, a buffer of the wrong kind...).
    Class(R),
}

impl<R: fmt::Debug> fmt::Debug for Broken<R> {
    /// The class's own reasons print as themselves (`NoHeader`), the ring's as `Queue(..)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Broken::Queue(e) => f.debug_tuple("Queue").field(e).finish(),
            Broken::Completion(e) => f.debug_tuple("Completion").field(e).finish(),
            Broken::Class(r) => r.fmt(f),
        }
    }
}

/// Where a client stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState<R> {
    /// Not (yet) DRIVER_OK with the queues the class needs, or reset: nothing is served.
    Idle,
    /// Served.
    Serving,
    /// Stopped until the client resets the device.
    Broken(Broken<R>),
}

/// A client's counters: the framework's, and the class's (reachable directly, `stats.bytes`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats<S> {
    /// Device resets by the client.
    pub resets: u32,
    /// Times service stopped because the client broke the rules.
    pub breaks: u32,
    /// The class's counters.
    pub class: S,
}

impl<S> Deref for ClientStats<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.class
    }
}

impl<S> DerefMut for ClientStats<S> {
    fn deref_mut(&mut self) -> &mut S {
        &mut self.class
    }
}

/// Which enabled queues DRIVER_OK needs before the client is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// Every queue in the mask (bit q: queue q).
    All(u32),
    /// At least one queue in the mask.
    Any(u32),
}

impl Ready {
    fn holds(self, open: u32) -> bool {
        match self {
            Ready::All(mask) => open & mask == mask,
            Ready::Any(mask) => open & mask != 0,
        }
    }
}

/// What a control step saw of a client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Control {
    /// Something changed (worth another pass).
    pub busy: bool,
    /// The client's epoch ended (reset, FAILED, or the control block broke): the class drops
    /// its work in progress.
    pub stopped: bool,
}

/// One client's channel.
pub struct Channel<'a, N, C: DeviceClass> {
    device: SharedMemoryDevice<'a, N>,
    area: GrantedArea<'a>,
    queues: [Option<ClientQueue<'a>>; MAX_QUEUES],
    state: ClientState<C::Reason>,
    /// Queues whose used ring changed since the last notification check (bit q).
    pushed: u32,
    stats: ClientStats<C::Stats>,
    /// The class's state for this client: its grant and its work in progress.
    pub class: C::Client,
}

impl<'a, N: Notifier, C: DeviceClass> Channel<'a, N, C> {
    /// The client's data area: where every buffer it names lies.
    pub fn area(&self) -> &GrantedArea<'a> {
        &self.area
    }

    /// The library's device side of the channel.
    pub fn device(&self) -> &SharedMemoryDevice<'a, N> {
        &self.device
    }

    /// Where the client stands.
    pub fn state(&self) -> ClientState<C::Reason> {
        self.state
    }

    /// Whether the client is served.
    pub fn serving(&self) -> bool {
        self.state == ClientState::Serving
    }

    /// The client's counters.
    pub fn stats(&self) -> &ClientStats<C::Stats> {
        &self.stats
    }

    /// The class's counters of the client, to count into.
    pub fn stats_mut(&mut self) -> &mut C::Stats {
        &mut self.stats.class
    }

    /// Queue `q`, if the client enabled it and is served.
    pub fn queue(&mut self, q: u16) -> Option<&mut ClientQueue<'a>> {
        if !self.serving() {
            return None;
        }
        self.queues.get_mut(usize::from(q))?.as_mut()
    }

    /// The class's state and queue `q` at once (when served).
    pub fn split(
        &mut self,
        q: u16,
    ) -> (
        &mut C::Client,
        &GrantedArea<'a>,
        Option<&mut ClientQueue<'a>>,
    ) {
        let serving = self.serving();
        let queue = self
            .queues
            .get_mut(usize::from(q))
            .and_then(Option::as_mut)
            .filter(|_| serving);
        (&mut self.class, &self.area, queue)
    }

    /// Returns `chain` to queue `q` with `written` bytes written, and remembers to tell the
    /// client (at the end of the pass, if it asked for it).
    pub fn push(&mut self, q: u16, chain: &Chain, written: u32) -> virtio::Result<()> {
        let queue = self
            .queues
            .get_mut(usize::from(q))
            .and_then(Option::as_mut)
            .ok_or(virtio::Error::QueueUnavailable)?;
        queue.queue().push(chain, written)?;
        self.pushed |= 1 << q;
        Ok(())
    }

    /// Ends the epoch in `state`: the queues close.
    fn stop(&mut self, state: ClientState<C::Reason>) {
        self.state = state;
        self.queues = [const { None }; MAX_QUEUES];
    }

    /// Answers the client's control requests (reset, FAILED, feature handshake, queue enables,
    /// DRIVER_OK). `may_reset`: whether a pending reset may be answered now.
    fn control(&mut self, may_reset: bool) -> Control {
        let mut seen = Control::default();
        let _ = self.device.take_kicks();
        if !may_reset && self.device.reset_pending().unwrap_or(false) {
            return seen;
        }
        let events = match self.device.process_requests() {
            Ok(events) => events,
            // The control block is the server's own layout; failing to access it means the
            // region is unusable: stop serving this client (once).
            Err(e) => {
                let broken = ClientState::Broken(Broken::Queue(e));
                if self.state != broken {
                    self.stop(broken);
                    self.stats.breaks += 1;
                    seen.stopped = true;
                }
                return seen;
            }
        };
        if events.reset || events.failed {
            self.stop(ClientState::Idle);
            if events.reset {
                self.stats.resets += 1;
            }
            seen = Control {
                busy: true,
                stopped: true,
            };
        }
        for q in 0..C::QUEUES.min(MAX_QUEUES as u16) {
            if events.queues_enabled & (1 << q) != 0 {
                self.queues[usize::from(q)] = ClientQueue::open(&self.device, q).ok();
                if let Some(queue) = self.queues[usize::from(q)].as_mut()
                    && C::NO_KICKS & (1 << q) != 0
                {
                    let _ = queue.queue().disable_notifications();
                }
                seen.busy = true;
            }
        }
        let open = (0..MAX_QUEUES)
            .filter(|&q| self.queues[q].is_some())
            .fold(0u32, |m, q| m | 1 << q);
        if events.driver_ok && C::READY.holds(open) {
            self.state = ClientState::Serving;
            seen.busy = true;
        }
        seen
    }

    /// Stops the client until it resets, telling it so (DEVICE_NEEDS_RESET, §2.1.2).
    fn break_with(&mut self, why: Broken<C::Reason>) {
        self.stop(ClientState::Broken(why));
        self.stats.breaks += 1;
        let _ = self.device.set_needs_reset();
    }

    /// Sends used buffer notifications for the queues pushed to since the last call, where
    /// the client asked for them (§2.7.7, §2.7.10); whether any queue was pushed to.
    fn notify(&mut self) -> bool {
        let pushed = core::mem::take(&mut self.pushed);
        for q in 0..MAX_QUEUES as u16 {
            if pushed & (1 << q) == 0 {
                continue;
            }
            let wanted = self.queues[usize::from(q)]
                .as_mut()
                .is_some_and(|queue| queue.queue().should_interrupt().unwrap_or(true));
            if wanted {
                let _ = self.device.interrupt(q);
            }
        }
        pushed != 0
    }
}

/// Every client of a server, and the round robin's position.
pub struct Clients<'a, N, C: DeviceClass> {
    slots: [Option<Channel<'a, N, C>>; MAX_CLIENTS],
    /// Where the next pass's round robin starts.
    next: usize,
}

impl<N, C: DeviceClass> fmt::Debug for Clients<'_, N, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Clients")
            .field("count", &self.slots.iter().flatten().count())
            .finish()
    }
}

impl<N, C: DeviceClass> Default for Clients<'_, N, C> {
    fn default() -> Self {
        Self {
            slots: [const { None }; MAX_CLIENTS],
            next: 0,
        }
    }
}

impl<'a, N: Notifier, C: DeviceClass> Clients<'a, N, C> {
    /// The first free slot.
    pub(crate) fn free_slot(&self) -> Option<usize> {
        self.slots.iter().position(Option::is_none)
    }

    /// Lays out a channel in slot `index` of `region` (`ring_len` bytes of ring area, the rest
    /// after the control block its data area) offering the device `description`, with the
    /// class's state `class`. The client learns of the fresh layout from a configuration
    /// change notification (a client of a previous server generation notices).
    pub(crate) fn add(
        &mut self,
        index: usize,
        region: virtio::dma::DmaRegion<'a>,
        ring_len: usize,
        description: &DeviceDescription<'_>,
        notifier: N,
        class: C::Client,
    ) -> virtio::Result<usize> {
        let mut device = SharedMemoryDevice::new(region, ring_len, description, notifier)?;
        device.update_config(0, description.config)?;
        self.slots[index] = Some(Channel {
            area: device.data_area(),
            device,
            queues: [const { None }; MAX_QUEUES],
            state: ClientState::Idle,
            pushed: 0,
            stats: ClientStats::default(),
            class,
        });
        Ok(index)
    }

    /// Client `index`'s channel.
    pub fn get(&self, index: usize) -> Option<&Channel<'a, N, C>> {
        self.slots.get(index)?.as_ref()
    }

    /// Client `index`'s channel, to serve it.
    pub fn get_mut(&mut self, index: usize) -> Option<&mut Channel<'a, N, C>> {
        self.slots.get_mut(index)?.as_mut()
    }

    /// Every client's channel with its index.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Channel<'a, N, C>)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((i, c.as_ref()?)))
    }

    /// Client `index`'s state.
    pub fn state(&self, index: usize) -> Option<ClientState<C::Reason>> {
        Some(self.get(index)?.state)
    }

    /// Client `index`'s counters.
    pub fn stats(&self, index: usize) -> Option<ClientStats<C::Stats>> {
        Some(self.get(index)?.stats)
    }

    pub(crate) fn control(&mut self, index: usize, may_reset: bool) -> Control {
        self.get_mut(index)
            .map_or(Control::default(), |c| c.control(may_reset))
    }

    pub(crate) fn break_with(&mut self, index: usize, why: Broken<C::Reason>) -> bool {
        self.get_mut(index).map(|c| c.break_with(why)).is_some()
    }

    pub(crate) fn notify(&mut self) -> bool {
        let mut any = false;
        for channel in self.slots.iter_mut().flatten() {
            any |= channel.notify();
        }
        any
    }

    /// The round robin's order for this pass (every slot once, from a start that moves on by
    /// one each pass, so no client is always first).
    pub(crate) fn rotation(&mut self) -> [usize; MAX_CLIENTS] {
        let start = self.next;
        self.next = (self.next + 1) % MAX_CLIENTS;
        core::array::from_fn(|k| (start + k) % MAX_CLIENTS)
    }
}
