//! The whole path on the host: `entropy_client::EntropyClient` → inter-partition transport →
//! [`Server`] → [`VirtioRng`] → inter-partition transport → a simulated entropy device served
//! by the library's device side. Time is a test-controlled clock; the device can be made slow.

use std::cell::{Ref, RefCell};
use std::rc::Rc;

use entropy_client::{EntropyClient, EntropyError};
use ioserver::DeviceClass;
use ioserver::conformance::{Driver, Request};
use ioserver::sim::{Keys, driver_end};
use virtio::devices::id;
use virtio::dma::{DmaRegion, OwnedDma};
use virtio::features::{Features, status};
use virtio::queue::{Buffer, DeviceQueue};
use virtio::split::SplitDeviceQueue;
use virtio::transport::shmem::sim::{SimNotifier, no_pump, pair};
use virtio::transport::shmem::{DeviceDescription, SharedMemoryDevice, SharedMemoryTransport};

use crate::server::{Broken, ClientState, Entropy, EntropySpec, RngRule, Server};
use crate::source::{RING_BYTES, VirtioRng};

const REGION_LEN: usize = 0x2_0000;
const RING_LEN: usize = 0x4000;
const S: u64 = 1_000_000_000;

/// An entropy device: fills each buffer from an xorshift stream, at most `per_step` bytes per
/// step (slow hardware) when set.
struct SimRng<'a> {
    device: SharedMemoryDevice<'a, SimNotifier<'a>>,
    queue: Option<SplitDeviceQueue<'a>>,
    state: u64,
    per_step: Option<usize>,
    produced: u64,
}

impl SimRng<'_> {
    fn step(&mut self) -> bool {
        let events = self.device.process_requests().unwrap();
        let mut busy = events != Default::default();
        if events.queues_enabled & 1 != 0 {
            self.queue = Some(self.device.split_queue(0).unwrap());
        }
        let _ = self.device.take_kicks();
        let area = self.device.data_area();
        let Some(queue) = self.queue.as_mut() else {
            return busy;
        };
        let mut budget = self.per_step.unwrap_or(usize::MAX);
        let mut pushed = false;
        while budget > 0 {
            let Some(chain) = queue.pop().unwrap() else {
                break;
            };
            let n = (chain.writable_len() as usize).min(budget);
            budget -= n;
            let bytes: Vec<u8> = (0..n)
                .map(|_| {
                    self.state ^= self.state << 13;
                    self.state ^= self.state >> 7;
                    self.state ^= self.state << 17;
                    self.state as u8
                })
                .collect();
            let mut writer = chain.writer(&area);
            writer.write(&bytes).unwrap();
            queue.push(&chain, writer.written()).unwrap();
            self.produced += n as u64;
            pushed = true;
            busy = true;
        }
        if pushed && queue.should_interrupt().unwrap() {
            self.device.interrupt(0).unwrap();
        }
        busy
    }
}

type Source0<'a> = VirtioRng<'a, SharedMemoryTransport<'a, SimNotifier<'a>>>;
type World<'a> = ioserver::sim::World<'a, Entropy<Source0<'a>>, SimRng<'a>>;

/// An entropy device in `device_memory` (at most `per_step` bytes per step when set) and a
/// server over it.
fn rng_world(device_memory: &OwnedDma, per_step: Option<usize>) -> World<'_> {
    let (rng_side, _) = pair(no_pump(), no_pump());
    let description = DeviceDescription {
        device_type: id::ENTROPY,
        features: Features(0),
        num_queues: 1,
        max_queue_size: 64,
        config: &[],
    };
    let device =
        SharedMemoryDevice::new(device_memory.region(0), RING_BYTES, &description, rng_side)
            .unwrap();
    let rng = Rc::new(RefCell::new(SimRng {
        device,
        queue: None,
        state: 0x1234_5678_9abc_def1,
        per_step,
        produced: 0,
    }));
    let theirs = rng.borrow_mut().device.notifier().clone();
    let to_rng = driver_end(&theirs, &rng, SimRng::step);
    let transport = SharedMemoryTransport::new(device_memory.region(0), to_rng).unwrap();
    let (ring, data) = (transport.ring_area(), transport.data_area());
    let source = VirtioRng::new(transport, ring, data, |_| Ok(())).unwrap();
    World::new(rng, Entropy::new(source), SimRng::step)
}

/// Adds a client at `rate` bytes per second.
fn add<'a>(
    world: &World<'a>,
    region: DmaRegion<'a>,
    rate: Option<u64>,
) -> (usize, SimNotifier<'a>) {
    let spec = EntropySpec { rate, burst: None };
    world.add_client(region, RING_LEN, &spec).unwrap()
}

fn attach<'a>(
    region: DmaRegion<'a>,
    notifier: SimNotifier<'a>,
) -> EntropyClient<'a, SimNotifier<'a>> {
    EntropyClient::attach(region, notifier, 3).unwrap()
}

#[test]
fn clients_get_random_bytes_each_byte_once() {
    let dev = OwnedDma::new(REGION_LEN);
    let (ma, mb) = (OwnedDma::new(REGION_LEN), OwnedDma::new(REGION_LEN));
    let world = rng_world(&dev, None);
    let (_, na) = add(&world, ma.region(0), None);
    let (_, nb) = add(&world, mb.region(0), None);
    let mut a = attach(ma.region(0), na);
    let mut b = attach(mb.region(0), nb);
    let mut all = Vec::new();
    for _ in 0..20 {
        let mut buf = [0u8; 300];
        let n = a.read(&mut buf).unwrap();
        assert_eq!(n, 300);
        all.extend_from_slice(&buf);
        let n = b.read(&mut buf[..100]).unwrap();
        assert_eq!(n, 100);
        all.extend_from_slice(&buf[..100]);
    }
    // Not constant, and no 16-byte window handed out twice.
    assert!(all.iter().any(|&x| x != all[0]));
    let mut windows: Vec<&[u8]> = all.chunks(16).collect();
    windows.sort();
    windows.dedup();
    assert_eq!(windows.len(), all.len() / 16);
    assert!(world.device.borrow().produced >= all.len() as u64);
}

#[test]
fn a_client_over_its_rate_is_served_partially_then_waits() {
    let dev = OwnedDma::new(REGION_LEN);
    let (ma, mb) = (OwnedDma::new(REGION_LEN), OwnedDma::new(REGION_LEN));
    let world = rng_world(&dev, None);
    let (ia, na) = add(&world, ma.region(0), Some(1000));
    let (ib, nb) = add(&world, mb.region(0), None);
    let mut a = attach(ma.region(0), na);
    let mut b = attach(mb.region(0), nb);
    let mut buf = [0u8; 4096];
    // Burst of one second's worth (1000 bytes): 512, then the remaining 488 (a partial
    // answer), then nothing until credit returns.
    assert_eq!(a.read(&mut buf).unwrap(), 512);
    assert_eq!(a.read(&mut buf).unwrap(), 488);
    assert_eq!(a.read(&mut buf), Err(EntropyError::Timeout));
    // The unlimited neighbour is served meanwhile.
    let mut got_b = 0;
    for _ in 0..10 {
        got_b += b.read(&mut buf).unwrap();
    }
    assert_eq!(got_b, 10 * 512);
    // The waiting request is answered as credit returns: 250 bytes after 250 ms.
    world.now.set(S / 4);
    world.run();
    assert_eq!(a.read(&mut buf).unwrap(), 250);
    // Over ten seconds a greedy client gets rate × time (+ the burst), no more.
    let mut total = 1250u64;
    for ms in (300..=10_250u64).step_by(50) {
        world.now.set(ms * 1_000_000);
        world.run();
        match a.read(&mut buf) {
            Ok(n) => total += n as u64,
            Err(EntropyError::Timeout) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(total <= 1000 + 10_250, "{total}");
    assert!(total >= 10_000, "{total}");
    let stats = world.server.borrow().client_stats(ia).unwrap();
    assert_eq!(stats.bytes, total);
    assert!(stats.partial >= 1 && stats.throttled >= 1, "{stats:?}");
    assert_eq!(world.server.borrow().client_stats(ib).unwrap().throttled, 0);
}

#[test]
fn a_slow_device_is_shared_and_nobody_starves() {
    let dev = OwnedDma::new(REGION_LEN);
    let mems: Vec<OwnedDma> = (0..3).map(|_| OwnedDma::new(REGION_LEN)).collect();
    // 64 bytes per device step: far less than three greedy clients ask for.
    let world = rng_world(&dev, Some(64));
    let mut clients: Vec<_> = mems
        .iter()
        .map(|m| {
            let (_, n) = add(&world, m.region(0), None);
            attach(m.region(0), n)
        })
        .collect();
    let mut got = [0usize; 3];
    let mut buf = [0u8; 4096];
    for _ in 0..200 {
        for (i, c) in clients.iter_mut().enumerate() {
            match c.read(&mut buf) {
                Ok(n) => got[i] += n,
                Err(EntropyError::Timeout) => {}
                Err(e) => panic!("{e:?}"),
            }
        }
    }
    let (min, max) = (*got.iter().min().unwrap(), *got.iter().max().unwrap());
    assert!(min > 0, "{got:?}");
    assert!(max <= 3 * min, "unfair share: {got:?}");
}

/// A client driving its ring by hand.
fn raw_client<'a>(region: DmaRegion<'a>, notifier: SimNotifier<'a>) -> Driver<'a> {
    Driver::attach::<Entropy<Source0<'a>>>(region, notifier, Features(0)).unwrap()
}

#[test]
fn malformed_requests_stop_only_that_client_until_it_resets() {
    let dev = OwnedDma::new(REGION_LEN);
    let (mg, mb) = (OwnedDma::new(REGION_LEN), OwnedDma::new(REGION_LEN));
    let world = rng_world(&dev, None);
    let (_, ng) = add(&world, mg.region(0), Some(100_000));
    let (bad, nb) = add(&world, mb.region(0), None);
    let mut good = attach(mg.region(0), ng);
    let cases: [(&str, Vec<Buffer>, Vec<Buffer>, Broken); 3] = [
        (
            "a device-readable buffer",
            vec![Buffer { addr: 0, len: 8 }],
            vec![Buffer { addr: 64, len: 8 }],
            Broken::Class(RngRule::ReadableBuffer),
        ),
        (
            "a buffer outside the data area",
            vec![],
            vec![Buffer {
                addr: 1 << 40,
                len: 8,
            }],
            Broken::Queue(virtio::Error::BufferOutsideGrant),
        ),
        (
            "a readable-only chain",
            vec![Buffer { addr: 0, len: 8 }],
            vec![],
            Broken::Class(RngRule::ReadableBuffer),
        ),
    ];
    for (round, (what, readable, writable, why)) in cases.into_iter().enumerate() {
        let mut driver = raw_client(mb.region(0), nb.clone());
        assert_eq!(
            world.server.borrow().client_state(bad),
            Some(ClientState::Serving),
            "{what}"
        );
        // A well-formed request first: answered.
        driver
            .submit_chain(0, &[], &[Buffer { addr: 0, len: 32 }])
            .unwrap();
        driver.kick(0).unwrap();
        world.run();
        let c = driver.poll_used(0).expect("answered");
        assert_eq!(c.written, 32, "{what}");
        driver.submit_chain(0, &readable, &writable).unwrap();
        driver.kick(0).unwrap();
        world.run();
        assert_eq!(
            world.server.borrow().client_state(bad),
            Some(ClientState::Broken(why)),
            "{what}"
        );
        assert_ne!(driver.status() & status::DEVICE_NEEDS_RESET, 0, "{what}");
        assert_eq!(driver.poll_used(0), None, "{what}");
        assert_eq!(
            world.server.borrow().client_stats(bad).unwrap().breaks,
            round as u32 + 1
        );
        let mut buf = [0u8; 64];
        assert_eq!(good.read(&mut buf).unwrap(), 64, "{what}");
    }
}

#[test]
fn rates_come_from_the_channel_configuration() {
    let dev = OwnedDma::new(REGION_LEN);
    let world = rng_world(&dev, None);
    let channels = [
        Keys {
            channel: "rng-a",
            pairs: &[("rate", "1024")],
        },
        Keys {
            channel: "rng-b",
            pairs: &[("rate", "4096"), ("burst", "256")],
        },
        Keys {
            channel: "rng-c",
            pairs: &[("kick", "other")],
        },
    ];
    let server = world.server.borrow();
    let specs: Vec<_> = channels
        .iter()
        .map(|c| server.class_ref().spec(c).unwrap())
        .collect();
    assert_eq!(
        specs,
        vec![
            EntropySpec {
                rate: Some(1024),
                burst: None
            },
            EntropySpec {
                rate: Some(4096),
                burst: Some(256)
            },
            EntropySpec {
                rate: None,
                burst: None
            },
        ]
    );
}

/// The framework's conformance suite on the entropy class.
struct Conformance<'a> {
    devices: &'a [OwnedDma; 2],
    world: World<'a>,
}

impl<'a> ioserver::conformance::Harness<'a> for Conformance<'a> {
    type Class = Entropy<Source0<'a>>;

    fn server(&self) -> Ref<'_, Server<'a, Source0<'a>, SimNotifier<'a>>> {
        self.world.server.borrow()
    }
    fn add_client(&mut self, _k: usize, region: DmaRegion<'a>) -> (usize, SimNotifier<'a>) {
        add(&self.world, region, None)
    }
    fn run(&mut self) {
        self.world.run();
    }
    fn request(&mut self, _: usize, _: &DmaRegion<'a>, at: usize) -> Request {
        let buffer = Buffer {
            addr: at as u64,
            len: 64,
        };
        Request {
            queue: 0,
            readable: vec![],
            writable: vec![buffer],
        }
    }
    fn restart(&mut self) {
        self.world = rng_world(&self.devices[1], None);
    }
}

#[test]
fn the_entropy_class_passes_the_conformance_suite() {
    ioserver::sim::conformance(REGION_LEN, |devices| Conformance {
        devices,
        world: rng_world(&devices[0], None),
    })
    .unwrap();
}
