//! The conformance suite: what every device class must do on the framework, checked on the
//! host against the class's own simulated device. A class's tests implement [`Harness`] (how
//! to build its server, add a client, run it, and make one well-formed request) and call
//! [`run_all`]; each check says what it expected when it fails.
//!
//! The checks, each with two or more clients:
//! - a malformed chain (a buffer outside the data area) stops only that client, with
//!   DEVICE_NEEDS_RESET, until it resets; then it is served again;
//! - a reset in the middle of a request loses no other client's work;
//! - a server restart is reported to every client (its device goes back to reset);
//! - a client that floods its queue and never takes its used buffers cannot hold up another
//!   client's request.
//!
//! The test driver here is deliberately plain (split rings, no EVENT_IDX, no indirect
//! descriptors): it drives the channel as the spec says, independently of the class's client
//! library.
extern crate std;

use core::cell::Ref;
use std::format;
use std::string::String;
use std::vec::Vec;

use virtio::dma::DmaRegion;
use virtio::features::{Features, bits, status};
use virtio::queue::{Buffer, Completion, DriverQueue, Token};
use virtio::split::SplitQueue;
use virtio::transport::shmem::sim::SimNotifier;
use virtio::transport::shmem::{Notifier, SharedMemoryTransport};
use virtio::transport::{Transport, initialize};

use crate::{ClientState, DeviceClass, Server};

/// Entries in each of the test driver's queues.
pub const DRIVER_QUEUE: usize = 16;
/// Ring bytes the test driver gives each queue.
const RING_PER_QUEUE: usize = 0x1000;

/// One request of a class: which queue, and its buffers (bus addresses in the client's data
/// area, which begin at 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The queue it goes to.
    pub queue: u16,
    /// Device-readable buffers, in order.
    pub readable: Vec<Buffer>,
    /// Device-writable buffers, in order.
    pub writable: Vec<Buffer>,
}

/// What the suite needs of a device class's test world.
pub trait Harness<'a> {
    /// The class under test.
    type Class: DeviceClass;

    /// Features the test driver accepts (VERSION_1 and the class's own; ring features are
    /// declined).
    fn driver_features(&self) -> Features {
        Features::from_bits(&[bits::VERSION_1])
    }
    /// The server, to look at.
    fn server(&self) -> Ref<'_, Server<'a, SimNotifier<'a>, Self::Class>>;
    /// Adds client `k` (0, 1, ...: each with its own grant) whose channel is `region`; its
    /// index and the client's end of its notifications.
    fn add_client(&mut self, k: usize, region: DmaRegion<'a>) -> (usize, SimNotifier<'a>);
    /// Runs the server and its simulated device until nothing moves.
    fn run(&mut self);
    /// A well-formed request of client `index` that the server completes by itself, its
    /// contents written into the client's data area `data` (at offset `at`, below
    /// `at + 0x1000`).
    fn request(&mut self, index: usize, data: &DmaRegion<'a>, at: usize) -> Request;
    /// Replaces the server and its simulated device with fresh ones with no clients yet (a
    /// restart: the suite adds the clients again, and every channel is laid out afresh).
    fn restart(&mut self);
}

/// A client driving its channel by hand.
pub struct Driver<'a> {
    transport: SharedMemoryTransport<'a, SimNotifier<'a>>,
    queues: Vec<SplitQueue<'a, DRIVER_QUEUE>>,
    data: DmaRegion<'a>,
}

impl<'a> Driver<'a> {
    /// Initialises the device in `region` (§3.1.1) with every queue of the class enabled.
    pub fn attach<C: DeviceClass>(
        region: DmaRegion<'a>,
        notifier: SimNotifier<'a>,
        features: Features,
    ) -> Result<Self, String> {
        let mut transport =
            SharedMemoryTransport::new(region, notifier).map_err(|e| format!("attach: {e:?}"))?;
        if transport.device_type() != C::DEVICE_TYPE {
            return Err(format!("device type {}", transport.device_type()));
        }
        let ring = transport.ring_area();
        let data = transport.data_area();
        let mut queues = Vec::new();
        initialize(&mut transport, features, |t, negotiated| {
            for q in 0..C::QUEUES {
                let area = ring.subregion(usize::from(q) * RING_PER_QUEUE, RING_PER_QUEUE)?;
                let queue = SplitQueue::<DRIVER_QUEUE>::new(area, negotiated, false)?;
                t.enable_queue(q, queue.size(), queue.addresses())?;
                queues.push(queue);
            }
            Ok(())
        })
        .map_err(|e| format!("initialise: {e:?}"))?;
        Ok(Self {
            transport,
            queues,
            data,
        })
    }

    /// The client's data area.
    pub fn data(&self) -> DmaRegion<'a> {
        self.data
    }

    /// Makes `request` available and kicks.
    pub fn submit(&mut self, request: &Request) -> Result<(), String> {
        let queue = self
            .queues
            .get_mut(usize::from(request.queue))
            .ok_or("no such queue")?;
        queue
            .submit(&request.readable, &request.writable)
            .map_err(|e| format!("submit: {e:?}"))?;
        self.transport
            .notify(request.queue)
            .map_err(|e| format!("notify: {e:?}"))
    }

    /// Makes a chain of `readable` then `writable` buffers available on `queue`, without a
    /// kick (a test may tamper with the ring first, through [`Driver::ring_area`]).
    pub fn submit_chain(
        &mut self,
        queue: u16,
        readable: &[Buffer],
        writable: &[Buffer],
    ) -> virtio::Result<Token> {
        self.queues
            .get_mut(usize::from(queue))
            .ok_or(virtio::Error::QueueUnavailable)?
            .submit(readable, writable)
    }

    /// Kicks `queue`.
    pub fn kick(&mut self, queue: u16) -> virtio::Result<()> {
        self.transport.notify(queue)
    }

    /// Waits for the device (runs the simulated system); whether it signalled.
    pub fn wait(&mut self) -> bool {
        self.transport.notifier().wait()
    }

    /// The next used buffer on `queue`, if any.
    pub fn poll_used(&mut self, queue: u16) -> Option<Completion> {
        self.queues.get_mut(usize::from(queue))?.poll_used().ok()?
    }

    /// The ring area (the queues' rings; queue q's at `q * 0x1000`).
    pub fn ring_area(&self) -> DmaRegion<'a> {
        self.transport.ring_area()
    }

    /// Used buffers on `queue` so far (taken).
    pub fn take_used(&mut self, queue: u16) -> usize {
        let Some(q) = self.queues.get_mut(usize::from(queue)) else {
            return 0;
        };
        let mut n = 0;
        while let Ok(Some(_)) = q.poll_used() {
            n += 1;
        }
        n
    }

    /// The device status the client reads.
    pub fn status(&mut self) -> u8 {
        self.transport.status()
    }

    /// Resets the device (§2.4: write 0, then wait for it to read back 0).
    pub fn reset(&mut self) {
        self.transport.set_status(0);
    }
}

/// Runs every check; the first failure, said.
pub fn run_all<'a, H: Harness<'a>>(
    make: impl Fn() -> H,
    regions: &'a [DmaRegion<'a>],
) -> Result<(), String> {
    malformed_chain_stops_only_that_client(&mut make(), &regions[0..2])?;
    reset_mid_request_loses_no_other_work(&mut make(), &regions[2..4])?;
    restart_is_reported_to_every_client(&mut make(), &regions[4..6])?;
    a_flooding_client_cannot_hold_up_another(&mut make(), &regions[6..8])?;
    Ok(())
}

/// Regions the suite needs from the caller (two clients per check).
pub const REGIONS: usize = 8;

fn attach_all<'a, H: Harness<'a>>(
    h: &mut H,
    regions: &'a [DmaRegion<'a>],
) -> Result<Vec<(usize, Driver<'a>)>, String> {
    let mut added = Vec::new();
    for (k, region) in regions.iter().enumerate() {
        added.push(h.add_client(k, *region));
    }
    h.run();
    let mut drivers = Vec::new();
    for ((index, notifier), region) in added.into_iter().zip(regions) {
        let driver = Driver::attach::<H::Class>(*region, notifier, h.driver_features())?;
        drivers.push((index, driver));
    }
    h.run();
    for (index, _) in &drivers {
        expect_state(h, *index, ClientState::Serving, "after initialisation")?;
    }
    Ok(drivers)
}

fn expect_state<'a, H: Harness<'a>>(
    h: &H,
    index: usize,
    want: ClientState<<H::Class as DeviceClass>::Reason>,
    when: &str,
) -> Result<(), String> {
    match h.server().client_state(index) {
        Some(s) if s == want => Ok(()),
        other => Err(format!(
            "client {index} {when}: {other:?}, expected {want:?}"
        )),
    }
}

/// One well-formed request of client `index` completes.
fn served<'a, H: Harness<'a>>(
    h: &mut H,
    index: usize,
    driver: &mut Driver<'a>,
    when: &str,
) -> Result<(), String> {
    let request = h.request(index, &driver.data(), 0);
    driver.submit(&request)?;
    h.run();
    match driver.take_used(request.queue) {
        0 => Err(format!(
            "client {index} {when}: its request was not completed"
        )),
        _ => Ok(()),
    }
}

/// A chain naming memory outside the data area stops that client (DEVICE_NEEDS_RESET) and no
/// other; after a reset the client is served again.
pub fn malformed_chain_stops_only_that_client<'a, H: Harness<'a>>(
    h: &mut H,
    regions: &'a [DmaRegion<'a>],
) -> Result<(), String> {
    let mut clients = attach_all(h, regions)?;
    let (bad, mut bad_driver) = clients.remove(0);
    let (good, mut good_driver) = clients.remove(0);
    let mut request = h.request(bad, &bad_driver.data(), 0);
    let outside = Buffer {
        addr: 1 << 40,
        len: 64,
    };
    match request.writable.first_mut() {
        Some(b) => *b = outside,
        None => request.readable[0] = outside,
    }
    bad_driver.submit(&request)?;
    h.run();
    match h.server().client_state(bad) {
        Some(ClientState::Broken(_)) => {}
        other => return Err(format!("malformed chain: client state {other:?}")),
    }
    if bad_driver.status() & status::DEVICE_NEEDS_RESET == 0 {
        return Err("malformed chain: DEVICE_NEEDS_RESET not set".into());
    }
    if bad_driver.take_used(request.queue) != 0 {
        return Err("malformed chain: completed".into());
    }
    served(h, good, &mut good_driver, "next to a broken client")?;
    // Still stopped until it resets: a good request now is not served.
    let request = h.request(bad, &bad_driver.data(), 0x1000);
    let _ = bad_driver.submit(&request);
    h.run();
    if bad_driver.take_used(request.queue) != 0 {
        return Err("a broken client was served before it reset".into());
    }
    bad_driver.reset();
    h.run();
    let notifier = bad_driver.transport.notifier().clone();
    let mut bad_driver = Driver::attach::<H::Class>(regions[0], notifier, h.driver_features())?;
    h.run();
    expect_state(h, bad, ClientState::Serving, "after its reset")?;
    served(h, bad, &mut bad_driver, "after its reset")
}

/// A client that resets with a request outstanding loses it; the other client's requests all
/// complete.
pub fn reset_mid_request_loses_no_other_work<'a, H: Harness<'a>>(
    h: &mut H,
    regions: &'a [DmaRegion<'a>],
) -> Result<(), String> {
    let mut clients = attach_all(h, regions)?;
    let (a, mut a_driver) = clients.remove(0);
    let (b, mut b_driver) = clients.remove(0);
    let mut b_requests = Vec::new();
    for k in 0..4 {
        let ra = h.request(a, &a_driver.data(), k * 0x1000);
        a_driver.submit(&ra)?;
        let rb = h.request(b, &b_driver.data(), k * 0x1000);
        b_driver.submit(&rb)?;
        b_requests.push(rb.queue);
    }
    // A resets before the server ran: its requests are in flight or queued.
    a_driver.reset();
    h.run();
    let done: usize = [0, 1, 2, 3].iter().map(|q| b_driver.take_used(*q)).sum();
    if done != b_requests.len() {
        return Err(format!(
            "client {b} completed {done} of {} requests while its neighbour reset",
            b_requests.len()
        ));
    }
    expect_state(h, a, ClientState::Idle, "after its reset")?;
    expect_state(h, b, ClientState::Serving, "after its neighbour's reset")
}

/// After a restart every client's device reads as reset (it must initialise again), and each
/// is served once it has.
pub fn restart_is_reported_to_every_client<'a, H: Harness<'a>>(
    h: &mut H,
    regions: &'a [DmaRegion<'a>],
) -> Result<(), String> {
    let clients = attach_all(h, regions)?;
    h.restart();
    let notifiers: Vec<_> = (0..regions.len())
        .map(|k| h.add_client(k, regions[k]).1)
        .collect();
    for (index, mut driver) in clients {
        if driver.status() & status::DRIVER_OK != 0 {
            return Err(format!(
                "after a restart client {index}'s device still reads DRIVER_OK"
            ));
        }
    }
    h.run();
    for (index, (region, notifier)) in regions.iter().zip(notifiers).enumerate() {
        let mut driver = Driver::attach::<H::Class>(*region, notifier, h.driver_features())?;
        h.run();
        served(h, index, &mut driver, "after the restart")?;
    }
    Ok(())
}

/// A client that keeps its queue full and never takes its used buffers does not stop another
/// client's request from completing.
pub fn a_flooding_client_cannot_hold_up_another<'a, H: Harness<'a>>(
    h: &mut H,
    regions: &'a [DmaRegion<'a>],
) -> Result<(), String> {
    let mut clients = attach_all(h, regions)?;
    let (flood, mut flood_driver) = clients.remove(0);
    let (calm, mut calm_driver) = clients.remove(0);
    for k in 0..DRIVER_QUEUE {
        let r = h.request(flood, &flood_driver.data(), (k % 8) * 0x1000);
        if flood_driver.submit(&r).is_err() {
            break;
        }
    }
    served(h, calm, &mut calm_driver, "next to a flooding client")?;
    expect_state(h, flood, ClientState::Serving, "after flooding")
}
