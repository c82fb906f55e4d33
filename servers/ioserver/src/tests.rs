//! The framework on its own: a toy class that fills each request with a pattern, served by
//! the framework's pass and main loop, and run through the conformance suite.

use std::cell::{Cell, Ref, RefCell};
use std::fmt;
use std::rc::Rc;
use std::string::String;
use std::vec::Vec;

use virtio::dma::{DmaRegion, OwnedDma};
use virtio::features::Features;
use virtio::queue::Buffer;
use virtio::transport::shmem::sim::{Pump, SimNotifier, no_pump, pair};

use crate::chain::write_writable;
use crate::conformance::{self, Harness, Request};
use crate::server::Visit;
use crate::serving::{Kernel, LoopSettings, Serving};
use crate::*;

const REGION_LEN: usize = 0x2_0000;
const RING_LEN: usize = 0x4000;

/// Fills every writable buffer with 0xa5.
#[derive(Debug, Default)]
struct Pattern {
    stops: usize,
    device: (),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatternRule {
    Readable,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct PatternStats {
    requests: u64,
}

impl DeviceClass for Pattern {
    const DEVICE_TYPE: u32 = 4;
    const QUEUES: u16 = 1;
    const READY: Ready = Ready::All(1);
    type Spec = ();
    type Refusal = ();
    type Client = ();
    type Stats = PatternStats;
    type Reason = PatternRule;

    fn spec(&self, _: &dyn Settings) -> Result<(), ()> {
        Ok(())
    }
    fn describe(_: &(), out: &mut dyn fmt::Write) -> fmt::Result {
        write!(out, "pattern")
    }
    fn offer(&self, _: &(), _: &mut [u8; MAX_CONFIG]) -> (Features, usize) {
        (ring_features(), 0)
    }
    fn max_queue_size(&self) -> u16 {
        64
    }
    fn admit(&mut self, _: usize, _: &(), _: u64) -> Result<(), ()> {
        Ok(())
    }
    fn stopped(&mut self, _: usize, _: &mut ()) {
        self.stops += 1;
    }
    fn serve<N: virtio::transport::shmem::Notifier>(
        &mut self,
        visit: Visit<'_, '_, N, Self>,
    ) -> Turn {
        let Visit { clients, index, .. } = visit;
        let Some(channel) = clients.get_mut(index) else {
            return Turn::Idle;
        };
        let Some(queue) = channel.queue(0) else {
            return Turn::Idle;
        };
        let chain = match queue.next_chain() {
            Ok(Some(chain)) => chain,
            Ok(None) => return Turn::Idle,
            Err(e) => {
                self.break_client(clients, index, Broken::Queue(e));
                return Turn::Worked;
            }
        };
        if chain.readable_len() > 0 {
            self.break_client(clients, index, Broken::Class(PatternRule::Readable));
            return Turn::Worked;
        }
        let bytes = vec![0xa5u8; chain.writable_len() as usize];
        let done = write_writable(&chain, channel.area(), 0, &bytes)
            .and_then(|()| channel.push(0, &chain, bytes.len() as u32));
        match done {
            Ok(()) => channel.stats_mut().requests += 1,
            Err(e) => self.break_client(clients, index, Broken::Completion(e)),
        }
        Turn::Worked
    }
    fn device(&mut self) -> &mut dyn DeviceInterrupts {
        &mut self.device
    }
    fn report(stats: &ClientStats<PatternStats>, out: &mut dyn fmt::Write) -> fmt::Result {
        write!(out, "{} requests", stats.requests)
    }
}

type PatternServer<'a> = Server<'a, SimNotifier<'a>, Pattern>;

struct World<'a> {
    server: Rc<RefCell<PatternServer<'a>>>,
    pump: Pump<'a>,
}

impl<'a> World<'a> {
    fn new() -> Self {
        let server = Rc::new(RefCell::new(Server::new(Pattern::default())));
        let pump: Pump<'a> = no_pump();
        {
            let server = server.clone();
            *pump.borrow_mut() = Some(Box::new(move || {
                server.borrow_mut().run(0);
            }));
        }
        Self { server, pump }
    }
}

impl<'a> Harness<'a> for World<'a> {
    type Class = Pattern;
    fn server(&self) -> Ref<'_, PatternServer<'a>> {
        self.server.borrow()
    }
    fn add_client(&mut self, _: usize, region: DmaRegion<'a>) -> (usize, SimNotifier<'a>) {
        let (server_side, client_side) = pair(no_pump(), self.pump.clone());
        let index = self
            .server
            .borrow_mut()
            .add_client(region, RING_LEN, &(), 0, server_side)
            .unwrap();
        (index, client_side)
    }
    fn run(&mut self) {
        self.server.borrow_mut().run(0);
    }
    fn request(&mut self, _: usize, _: &DmaRegion<'a>, at: usize) -> Request {
        Request {
            queue: 0,
            readable: vec![],
            writable: vec![Buffer {
                addr: at as u64,
                len: 32,
            }],
        }
    }
    fn restart(&mut self) {
        *self.server.borrow_mut() = Server::new(Pattern::default());
    }
}

#[test]
fn the_framework_passes_its_own_conformance_suite() {
    let memories: Vec<OwnedDma> = (0..conformance::REGIONS)
        .map(|_| OwnedDma::new(REGION_LEN))
        .collect();
    let regions: Vec<DmaRegion<'_>> = memories.iter().map(|m| m.region(0)).collect();
    conformance::run_all(World::new, &regions).unwrap();
}

#[test]
fn a_class_reason_prints_as_itself_and_a_ring_error_as_queue() {
    let class: Broken<PatternRule> = Broken::Class(PatternRule::Readable);
    assert_eq!(format!("{class:?}"), "Readable");
    let ring: Broken<PatternRule> = Broken::Queue(virtio::Error::BufferOutsideGrant);
    assert_eq!(format!("{ring:?}"), "Queue(BufferOutsideGrant)");
}

/// A kernel whose clock moves 1 ms per call and that records the log.
#[derive(Default)]
struct FakeKernel {
    now: Cell<u64>,
    log: Vec<String>,
    waits: usize,
}

impl Kernel for FakeKernel {
    fn now_ns(&self) -> u64 {
        self.now.replace(self.now.get() + 1_000_000)
    }
    fn wait(&mut self) -> u64 {
        self.waits += 1;
        0
    }
    fn poll(&mut self) -> u64 {
        0
    }
    fn sleep_until(&mut self, at_ns: u64) {
        self.now.set(at_ns);
    }
    fn ack_device(&mut self, _: u64) {}
    fn log(&mut self, line: fmt::Arguments<'_>) {
        self.log.push(line.to_string());
    }
}

#[test]
fn the_main_loop_reports_state_changes_and_counters_then_sleeps() {
    let memories: Vec<OwnedDma> = (0..2).map(|_| OwnedDma::new(REGION_LEN)).collect();
    let mut world = World::new();
    let (a, na) = world.add_client(0, memories[0].region(0));
    let (_, nb) = world.add_client(1, memories[1].region(0));
    let mut da =
        conformance::Driver::attach::<Pattern>(memories[0].region(0), na, world.driver_features())
            .unwrap();
    let mut db =
        conformance::Driver::attach::<Pattern>(memories[1].region(0), nb, world.driver_features())
            .unwrap();
    da.submit(&world.request(a, &da.data(), 0)).unwrap();
    // A readable buffer breaks client b.
    db.submit(&Request {
        queue: 0,
        readable: vec![Buffer { addr: 0, len: 8 }],
        writable: vec![],
    })
    .unwrap();
    let settings = LoopSettings {
        interrupts: true,
        irq_bits: 0,
        poll_ns: 0,
        poll_period_ns: 1_000_000,
        report_ns: 1_000_000,
    };
    let mut kernel = FakeKernel::default();
    let mut serving = Serving::<Pattern>::new(["a", "b", "", "", "", "", "", ""], settings, 0);
    let mut server = world.server.borrow_mut();
    serving.step(&mut server, &mut kernel, &mut |_, _| {});
    assert_eq!(kernel.waits, 1, "idle: it sleeps in wait");
    assert_eq!(
        kernel.log,
        [
            "a: serving",
            "b: stopped until it resets: Readable (break 1)",
            "a: 1 requests",
        ]
    );
    // Nothing changed: nothing more is said.
    serving.step(&mut server, &mut kernel, &mut |_, _| {});
    assert_eq!(kernel.log.len(), 3);
    assert_eq!(server.class().stops, 1);
}
