//! The serving pass every device class shares, around the class's own request handling.
//!
//! Each pass of [`Server::run_once`]:
//! 1. answers every client's control requests (reset, FAILED, features, queue enables,
//!    DRIVER_OK); a client whose epoch ends has its work in progress dropped by the class;
//! 2. lets the class look at its real device ([`DeviceClass::poll_device`]: completions,
//!    received data);
//! 3. gives each served client a turn, round robin from a start that moves on every pass
//!    ([`DeviceClass::serve`]); turns go round again while the class asks for more rounds and
//!    some turn did work;
//! 4. lets the class finish ([`DeviceClass::finish_pass`]: issue queued work, flush);
//! 5. sends used buffer notifications where the clients asked for them.

use core::fmt;

use virtio::dma::DmaRegion;
use virtio::features::Features;
use virtio::transport::shmem::{DeviceDescription, Notifier};

use crate::client::{Broken, Channel, ClientState, ClientStats, Clients, Ready};

/// A channel's configuration as the description gives it (`[channels.NAME.config]`).
pub trait Settings {
    /// The value of `key` as text.
    fn text(&self, key: &str) -> Option<&str>;
    /// The value of `key` as an unsigned integer.
    fn number(&self, key: &str) -> Option<u64>;
    /// The channel's name in the description, if known (a class may show it to the client,
    /// as a block device's id).
    fn channel(&self) -> Option<&str> {
        None
    }
}

/// Largest configuration space a class offers its clients.
pub const MAX_CONFIG: usize = 256;

/// Why a client could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddError<R> {
    /// Every client slot is taken.
    Full,
    /// The class refused the client's grant (a resource another client has, or that the
    /// device does not have).
    Refused(R),
    /// The shared region cannot hold the channel.
    Layout(virtio::Error),
}

/// What a pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Something happened (worth another pass).
    pub busy: bool,
    /// The earliest time a held request may go on (rate credit returns), if one waits.
    pub wake_at: Option<u64>,
    /// A client got a used buffer in this pass.
    pub completed: bool,
}

impl Progress {
    /// Wakes at `at` at the latest.
    pub fn wake_by(&mut self, at: u64) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }

    /// What this pass and `later` did together.
    pub fn merge(&mut self, later: Progress) {
        self.busy |= later.busy;
        self.completed |= later.completed;
        if let Some(at) = later.wake_at {
            self.wake_by(at);
        }
    }
}

/// What one client's turn did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Nothing to do for this client.
    Idle,
    /// Work was done (another round may find more).
    Worked,
    /// The server cannot take more work this pass (its tables are full): end the turns.
    Full,
}

/// The real device's interrupt, as the serving loop drives it: off while the server polls,
/// asked for again (and the device re-checked) before it sleeps, acknowledged when it came.
pub trait DeviceInterrupts {
    /// Acknowledges the device's interrupt (reads and clears its cause).
    fn ack_interrupt(&mut self) {}
    /// Asks the device not to interrupt for completions: the server is polling.
    fn suppress_interrupts(&mut self) {}
    /// Asks the device to interrupt for the next completion, then re-checks: whether one is
    /// already there, in which case the server polls again instead of sleeping (the enable,
    /// then re-check idiom of §2.7.10).
    fn request_interrupt(&mut self) -> bool {
        false
    }
}

/// A device with no interrupt of its own (a class served wholly by the server).
impl DeviceInterrupts for () {}

/// One client's turn in a pass: the whole client table (a class may deliver to other
/// clients in it), whose turn it is, the time, and what the pass did so far.
pub struct Visit<'t, 'a, N, C: DeviceClass> {
    /// Every client.
    pub clients: &'t mut Clients<'a, N, C>,
    /// Whose turn it is.
    pub index: usize,
    /// The pass's time.
    pub now_ns: u64,
    /// What the pass did so far (a class adds a wake-up time or completions).
    pub progress: &'t mut Progress,
}

/// A VirtIO device class served to partitions: what it offers, what it keeps per client, how
/// it serves a client's requests. The framework does the rest.
pub trait DeviceClass: Sized {
    /// The device type the clients see (§5).
    const DEVICE_TYPE: u32;
    /// Queues of each client's device.
    const QUEUES: u16;
    /// Which enabled queues DRIVER_OK needs before the client is served.
    const READY: Ready;
    /// Queues whose buffers the server takes when it has something for them, not when the
    /// client kicks (bit q: their kicks are switched off when the queue opens).
    const NO_KICKS: u32 = 0;
    /// Most passes' rounds of turns (1: one turn per client per pass).
    const ROUNDS: usize = 1;

    /// What the description grants one client (from its channel's configuration).
    type Spec;
    /// Why the class refuses a client's grant.
    type Refusal: Copy + fmt::Debug;
    /// The class's state per client: its grant from the description and its work in progress.
    type Client;
    /// The class's counters per client.
    type Stats: Copy + Default + PartialEq + fmt::Debug;
    /// The class's own reasons to stop serving a client.
    type Reason: Copy + Eq + fmt::Debug;

    /// What the description grants a client, from its channel's configuration; or why it is
    /// not served.
    fn spec(&self, config: &dyn Settings) -> Result<Self::Spec, Self::Refusal>;

    /// The log's word on what client `client` was given (after `NAME: `).
    fn describe(client: &Self::Client, out: &mut dyn fmt::Write) -> fmt::Result;

    /// The real device can reach client `index`'s data area at bus address `data_bus` (the
    /// server is the DMA owner of its region): the class may let the device use the client's
    /// buffers directly. Whether it does.
    fn dma_reachable(&mut self, _index: usize, _client: &mut Self::Client, _data_bus: u64) -> bool {
        false
    }

    /// The device a client granted `spec` sees: its features (the ring features included) and
    /// its configuration space, written into `config`; the length of that space.
    fn offer(&self, spec: &Self::Spec, config: &mut [u8; MAX_CONFIG]) -> (Features, usize);

    /// Largest queue size offered to a client.
    fn max_queue_size(&self) -> u16;

    /// Takes client `index` granted `spec` at `now_ns`: its per-client state, or why not.
    fn admit(
        &mut self,
        index: usize,
        spec: &Self::Spec,
        now_ns: u64,
    ) -> Result<Self::Client, Self::Refusal>;

    /// Client `index`'s epoch ended (reset, FAILED, broken): drop its work in progress.
    fn stopped(&mut self, _index: usize, _client: &mut Self::Client) {}

    /// Whether a reset that client `index` asked for may be answered now (not while the real
    /// device may still touch its buffers, §2.4).
    fn may_reset(&self, _index: usize, _client: &Self::Client) -> bool {
        true
    }

    /// Looks at the real device before the clients' turns.
    fn poll_device<N: Notifier>(
        &mut self,
        _clients: &mut Clients<'_, N, Self>,
        _now_ns: u64,
    ) -> Progress {
        Progress::default()
    }

    /// Serves client `visit.index` (served, with its queues open) for one turn.
    fn serve<N: Notifier>(&mut self, visit: Visit<'_, '_, N, Self>) -> Turn;

    /// Finishes the pass after the turns.
    fn finish_pass<N: Notifier>(
        &mut self,
        _clients: &mut Clients<'_, N, Self>,
        _now_ns: u64,
    ) -> Progress {
        Progress::default()
    }

    /// Stops client `index` until it resets (DEVICE_NEEDS_RESET, §2.1.2), dropping its work.
    fn break_client<N: Notifier>(
        &mut self,
        clients: &mut Clients<'_, N, Self>,
        index: usize,
        why: Broken<Self::Reason>,
    ) {
        if clients.break_with(index, why)
            && let Some(channel) = clients.get_mut(index)
        {
            self.stopped(index, &mut channel.class);
        }
    }

    /// The class's real device, whose interrupt the serving loop drives.
    fn device(&mut self) -> &mut dyn DeviceInterrupts;

    /// The per-client counter report's line (after `NAME: `), when the counters changed.
    fn report(_stats: &ClientStats<Self::Stats>, _out: &mut dyn fmt::Write) -> fmt::Result {
        Ok(())
    }

    /// Requests on the real device that will complete without a client's doing (the server
    /// polls for them a while rather than sleep at once).
    fn in_flight(&self) -> usize {
        0
    }
}

/// A server: the device class and its clients.
pub struct Server<'a, N, C: DeviceClass> {
    class: C,
    clients: Clients<'a, N, C>,
}

impl<N, C: DeviceClass> fmt::Debug for Server<'_, N, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("clients", &self.clients)
            .finish()
    }
}

impl<'a, N: Notifier, C: DeviceClass> Server<'a, N, C> {
    /// A server of `class`, with no clients yet.
    pub fn new(class: C) -> Self {
        Self {
            class,
            clients: Clients::default(),
        }
    }

    /// The device class.
    pub fn class(&mut self) -> &mut C {
        &mut self.class
    }

    /// The device class, to look at.
    pub fn class_ref(&self) -> &C {
        &self.class
    }

    /// The clients.
    pub fn clients(&self) -> &Clients<'a, N, C> {
        &self.clients
    }

    /// Lays out a channel for a client granted `spec` in `region` (`ring_len` bytes of ring
    /// area, the rest after the control block its data area) and tells the client (a
    /// configuration change notification, so a client of a previous server generation
    /// notices the fresh layout). Returns the client's index.
    pub fn add_client(
        &mut self,
        region: DmaRegion<'a>,
        ring_len: usize,
        spec: &C::Spec,
        now_ns: u64,
        notifier: N,
    ) -> Result<usize, AddError<C::Refusal>> {
        let index = self.clients.free_slot().ok_or(AddError::Full)?;
        let mut config = [0u8; MAX_CONFIG];
        let (features, config_len) = self.class.offer(spec, &mut config);
        let description = DeviceDescription {
            device_type: C::DEVICE_TYPE,
            features,
            num_queues: C::QUEUES,
            max_queue_size: self.class.max_queue_size(),
            config: &config[..config_len.min(MAX_CONFIG)],
        };
        let client = self
            .class
            .admit(index, spec, now_ns)
            .map_err(AddError::Refused)?;
        self.clients
            .add(index, region, ring_len, &description, notifier, client)
            .map_err(AddError::Layout)
    }

    /// The real device reaches client `index`'s whole shared region at bus address
    /// `region_bus`: tells the class where its data area is for the device
    /// ([`DeviceClass::dma_reachable`]); whether the class uses it.
    pub fn set_dma_base(&mut self, index: usize, region_bus: u64) -> bool {
        let Some(channel) = self.clients.get_mut(index) else {
            return false;
        };
        let len = channel.area().memory().len() as u64;
        let data_bus = region_bus
            .checked_add(channel.device().data_offset() as u64)
            .filter(|base| base.checked_add(len).is_some());
        data_bus.is_some_and(|bus| self.class.dma_reachable(index, &mut channel.class, bus))
    }

    /// Client `index`'s channel.
    pub fn client(&self, index: usize) -> Option<&Channel<'a, N, C>> {
        self.clients.get(index)
    }

    /// Client `index`'s state.
    pub fn client_state(&self, index: usize) -> Option<ClientState<C::Reason>> {
        self.clients.state(index)
    }

    /// Client `index`'s counters.
    pub fn client_stats(&self, index: usize) -> Option<ClientStats<C::Stats>> {
        self.clients.stats(index)
    }

    /// One pass at time `now_ns`.
    pub fn run_once(&mut self, now_ns: u64) -> Progress {
        let mut progress = Progress::default();
        for index in 0..crate::MAX_CLIENTS {
            let may_reset = self
                .clients
                .get(index)
                .is_some_and(|c| self.class.may_reset(index, &c.class));
            let seen = self.clients.control(index, may_reset);
            progress.busy |= seen.busy;
            if seen.stopped
                && let Some(channel) = self.clients.get_mut(index)
            {
                self.class.stopped(index, &mut channel.class);
            }
        }
        let polled = self.class.poll_device(&mut self.clients, now_ns);
        progress.merge(polled);
        let order = self.clients.rotation();
        'rounds: for _ in 0..C::ROUNDS {
            let mut worked = false;
            for &index in &order {
                if !self.clients.get(index).is_some_and(Channel::serving) {
                    continue;
                }
                let visit = Visit {
                    clients: &mut self.clients,
                    index,
                    now_ns,
                    progress: &mut progress,
                };
                match self.class.serve(visit) {
                    Turn::Idle => {}
                    Turn::Worked => worked = true,
                    Turn::Full => {
                        progress.busy = true;
                        break 'rounds;
                    }
                }
            }
            progress.busy |= worked;
            if !worked {
                break;
            }
        }
        let finished = self.class.finish_pass(&mut self.clients, now_ns);
        progress.merge(finished);
        progress.completed |= self.clients.notify();
        progress
    }

    /// Runs passes at `now_ns` until one does nothing (bounded); the last pass's progress.
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
}
