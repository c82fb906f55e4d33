//! The session against the library's device side in the same process: a simulated server lays
//! the channel out, answers requests whenever the client waits, and (when told to) returns every
//! buffer it is given.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use virtio::devices::id;
use virtio::dma::{DmaRegion, OwnedDma};
use virtio::features::{Features, bits, status};
use virtio::queue::{Buffer, DeviceQueue, DriverQueue};
use virtio::split::SplitDeviceQueue;
use virtio::transport::shmem::sim::{Pump, SimNotifier, no_pump, pair};
use virtio::transport::shmem::{DeviceDescription, Notifier, SharedMemoryDevice};

use crate::{Class, Session, SessionError};

const REGION_LEN: usize = 0x2_0000;
const RING_LEN: usize = 0x4000;
const MAX_WAITS: u32 = 7;

type Device<'a> = SharedMemoryDevice<'a, SimNotifier<'a>>;

/// A server for device type `ENTROPY` with two queues, run by the client's waits.
struct Server<'a> {
    region: DmaRegion<'a>,
    device: Rc<RefCell<Device<'a>>>,
    queue: Rc<RefCell<Option<SplitDeviceQueue<'a>>>>,
    notifier: SimNotifier<'a>,
    /// Whether used buffers come back.
    serve: Rc<Cell<bool>>,
    /// Client waits so far (each runs the server once).
    waits: Rc<Cell<u32>>,
}

fn description() -> DeviceDescription<'static> {
    DeviceDescription {
        device_type: id::ENTROPY,
        features: Features::from_bits(&[bits::EVENT_IDX]),
        num_queues: 2,
        max_queue_size: 16,
        config: &[],
    }
}

fn class() -> Class {
    Class {
        device_type: id::ENTROPY,
        features: Features::from_bits(&[bits::EVENT_IDX]),
        data_bytes: 4096,
    }
}

impl<'a> Server<'a> {
    /// Lays out a channel in `memory`; returns the server and the client's notifier.
    fn new(memory: &'a OwnedDma) -> (Self, SimNotifier<'a>) {
        let client_pump: Pump<'a> = no_pump();
        let (client, notifier) = pair(client_pump.clone(), no_pump());
        let region = memory.region(0);
        let device = SharedMemoryDevice::new(region, RING_LEN, &description(), notifier.clone());
        let server = Self {
            region,
            device: Rc::new(RefCell::new(device.unwrap())),
            queue: Rc::new(RefCell::new(None)),
            notifier,
            serve: Rc::new(Cell::new(true)),
            waits: Rc::new(Cell::new(0)),
        };
        let (device, queue) = (server.device.clone(), server.queue.clone());
        let (serve, waits) = (server.serve.clone(), server.waits.clone());
        *client_pump.borrow_mut() = Some(Box::new(move || {
            waits.set(waits.get() + 1);
            let mut device = device.borrow_mut();
            let events = device.process_requests().unwrap();
            if events.reset {
                *queue.borrow_mut() = None;
            }
            if events.queues_enabled & 1 != 0 {
                *queue.borrow_mut() = Some(device.split_queue(0).unwrap());
            }
            let _ = device.take_kicks();
            let mut queue = queue.borrow_mut();
            let Some(queue) = queue.as_mut().filter(|_| serve.get()) else {
                return;
            };
            let mut pushed = false;
            while let Some(chain) = queue.pop().unwrap() {
                queue.push(&chain, chain.writable_len() as u32).unwrap();
                pushed = true;
            }
            if pushed && queue.should_interrupt().unwrap() {
                device.interrupt(0).unwrap();
            }
        }));
        (server, client)
    }

    /// The server restarts: a fresh channel in the same region (status 0).
    fn restart(&self) {
        let device =
            SharedMemoryDevice::new(self.region, RING_LEN, &description(), self.notifier.clone());
        *self.device.borrow_mut() = device.unwrap();
        *self.queue.borrow_mut() = None;
    }
}

type TestSession<'a> = Session<'a, SimNotifier<'a>, 8, 2>;

/// Runs `test` on a session connected to a fresh server.
fn with_session(test: impl for<'a> FnOnce(&Server<'a>, &mut TestSession<'a>)) {
    let memory = OwnedDma::new(REGION_LEN);
    let (server, notifier) = Server::new(&memory);
    let mut session = Session::attach(server.region, notifier, class(), MAX_WAITS).unwrap();
    test(&server, &mut session);
}

/// Submits one device-writable buffer on queue 0 and waits for it; the bytes written.
fn round_trip(session: &mut TestSession<'_>) -> Result<u32, SessionError> {
    let data = session.data_area();
    let buffer = Buffer {
        addr: data.bus_address(0),
        len: 64,
    };
    let token = session.queue(0)?.submit(&[], &[buffer])?;
    session.kick(0)?;
    let mut misses = 0;
    loop {
        if let Some(done) = session.queue(0)?.poll_used()? {
            assert_eq!(done.token, token);
            return Ok(done.written);
        }
        session.wait_used(0, &mut misses)?;
    }
}

#[test]
fn connects_negotiates_and_sets_up_every_queue() {
    with_session(|server, session| {
        assert_eq!(
            session.features(),
            Features::from_bits(&[bits::EVENT_IDX, bits::VERSION_1])
        );
        let device = server.device.borrow();
        assert_ne!(device.status() & status::DRIVER_OK, 0);
        assert!(device.split_queue(0).is_ok() && device.split_queue(1).is_ok());
        drop(device);
        assert_eq!(session.check_device(), Ok(()));
        assert!(session.queue(2).is_err());
        assert_eq!(round_trip(session), Ok(64));
        assert_eq!(round_trip(session), Ok(64));
    });
}

#[test]
fn queues_get_separate_page_aligned_shares_of_the_ring_area() {
    with_session(|_, session| {
        let rx = session.queue(0).unwrap().addresses();
        let tx = session.queue(1).unwrap().addresses();
        assert_eq!(rx.desc, 0);
        assert_eq!(tx.desc, (RING_LEN / 2) as u64);
    });
}

#[test]
fn a_channel_not_laid_out_is_not_ready() {
    let memory = OwnedDma::new(REGION_LEN);
    let (_, notifier) = pair(no_pump(), no_pump());
    let result = TestSession::attach(memory.region(0), notifier, class(), MAX_WAITS);
    assert_eq!(result.err(), Some(SessionError::NotReady));
}

#[test]
fn another_device_type_is_refused_before_the_device_is_touched() {
    let memory = OwnedDma::new(REGION_LEN);
    let (server, notifier) = Server::new(&memory);
    let block = Class {
        device_type: id::BLOCK,
        ..class()
    };
    let result = TestSession::attach(server.region, notifier, block, MAX_WAITS);
    assert_eq!(result.err(), Some(SessionError::WrongDevice));
    assert_eq!(server.device.borrow().status(), 0);
    assert_eq!(server.waits.get(), 0);
}

#[test]
fn a_data_area_too_small_for_the_class_is_refused_before_the_device_is_touched() {
    let memory = OwnedDma::new(REGION_LEN);
    let (server, notifier) = Server::new(&memory);
    let greedy = Class {
        data_bytes: REGION_LEN,
        ..class()
    };
    let result = TestSession::attach(server.region, notifier, greedy, MAX_WAITS);
    assert_eq!(result.err(), Some(SessionError::TooSmall));
    assert_eq!(server.device.borrow().status(), 0);
}

#[test]
fn a_server_restart_is_seen_as_reset_and_reconnect_recovers() {
    with_session(|server, session| {
        server.restart();
        assert_eq!(session.check_device(), Err(SessionError::Reset));
        let mut misses = 0;
        assert_eq!(session.wait_used(0, &mut misses), Err(SessionError::Reset));
        session.reconnect().unwrap();
        assert_eq!(session.check_device(), Ok(()));
        assert_eq!(round_trip(session), Ok(64));
    });
}

#[test]
fn a_broken_channel_is_seen_as_needs_reset_and_reconnect_recovers() {
    with_session(|server, session| {
        server.device.borrow_mut().set_needs_reset().unwrap();
        assert_eq!(session.check_device(), Err(SessionError::NeedsReset));
        assert_eq!(round_trip(session), Err(SessionError::NeedsReset));
        // A fresh session while the old one is kept: reattach leaves this one as it was.
        let mut fresh = session.reattach().unwrap();
        assert_eq!(fresh.check_device(), Ok(()));
        assert_eq!(round_trip(&mut fresh), Ok(64));
    });
}

#[test]
fn reconnect_while_the_server_is_away_fails_and_keeps_the_session() {
    with_session(|server, session| {
        server.region.fill(0, 4096, 0).unwrap();
        assert_eq!(session.reconnect(), Err(SessionError::NotReady));
        assert_eq!(session.max_waits(), MAX_WAITS);
    });
}

#[test]
fn a_silent_server_times_out_after_exactly_max_waits_empty_waits() {
    with_session(|server, session| {
        server.serve.set(false);
        let before = server.waits.get();
        assert_eq!(round_trip(session), Err(SessionError::Timeout));
        assert_eq!(server.waits.get() - before, MAX_WAITS);
        // The buffer stays posted: once the server answers, the next wait sees it.
        server.serve.set(true);
        let mut misses = 0;
        loop {
            if session.queue(0).unwrap().poll_used().unwrap().is_some() {
                break;
            }
            session.wait_used(0, &mut misses).unwrap();
        }
    });
}

#[test]
fn a_signal_restarts_the_count_of_empty_waits() {
    with_session(|server, session| {
        server.serve.set(false);
        let mut misses = MAX_WAITS - 2;
        server.notifier.clone().notify_peer();
        assert_eq!(session.wait_used(0, &mut misses), Ok(()));
        assert_eq!(misses, 0);
    });
}

/// What a class's error looks like for a class that never waits (like the NIC): a timeout can
/// only come from the transport.
mod never_waits {
    crate::client_error! {
        /// Why the test class failed.
        pub enum TestError {
            /// Not the test device.
            wrong_device: NotTest,
            /// The data area is too small.
            TooSmall,
        }
        too_small => TestError::TooSmall,
        timeout => TestError::Transport(virtio::Error::Timeout),
    }
}

#[test]
fn class_errors_convert_from_session_and_transport_errors() {
    use never_waits::TestError;
    let cases = [
        (SessionError::NotReady, TestError::NotReady),
        (SessionError::WrongDevice, TestError::NotTest),
        (SessionError::TooSmall, TestError::TooSmall),
        (SessionError::Reset, TestError::Reset),
        (SessionError::NeedsReset, TestError::NeedsReset),
        (
            SessionError::Timeout,
            TestError::Transport(virtio::Error::Timeout),
        ),
        (
            SessionError::Transport(virtio::Error::QueueFull),
            TestError::Transport(virtio::Error::QueueFull),
        ),
    ];
    for (session, class) in cases {
        assert_eq!(TestError::from(session), class);
    }
    assert_eq!(
        TestError::from(virtio::Error::DeviceNeedsReset),
        TestError::NeedsReset
    );
    assert_eq!(
        TestError::from(virtio::Error::NoDevice),
        TestError::NotReady
    );
    assert_eq!(
        SessionError::from(virtio::Error::Timeout),
        SessionError::Timeout
    );
}
