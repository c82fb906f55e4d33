//! The whole path on the host: `console_client::ConsoleClient` → inter-partition transport →
//! the server ([`Consoles`]) → [`VirtioPorts`] (the multiport driver) → inter-partition transport → a
//! simulated multiport virtio-console served by the library's device side, which records what
//! each port's host side received and feeds it input. Notifications are simulated: a client
//! that waits runs the server and the console until they are quiet. Time is a test-controlled
//! clock.

use std::cell::{Ref, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use console_client::{ConsoleClient, ConsoleError};
use ioserver::Settings;
use ioserver::conformance::{Driver, Request};
use ioserver::sim::Keys;
use ioserver::sim::driver_end;
use virtio::devices::console::{self, ControlMessage, event};
use virtio::devices::id;
use virtio::dma::{DmaRegion, OwnedDma};
use virtio::features::{Features, status};
use virtio::queue::{Buffer, DeviceQueue};
use virtio::split::SplitDeviceQueue;
use virtio::transport::shmem::sim::{SimNotifier, no_pump, pair};
use virtio::transport::shmem::{DeviceDescription, SharedMemoryDevice, SharedMemoryTransport};

use crate::backend::{PortStatus, Ports, VirtioPorts, buffer_bytes, ring_bytes};
use crate::server::{Broken, ClientState, ConsoleRule, ConsoleSpec, Consoles, SpecError};

const REGION_LEN: usize = 0x2_0000;
const RING_LEN: usize = 0x4000;
/// Ports of the simulated device (`max_nr_ports`).
const DEVICE_PORTS: u32 = 4;
const S: u64 = 1_000_000_000;

const NQ: usize = 2 + 2 * DEVICE_PORTS as usize;

/// A multiport console as QEMU's virtio-serial behaves (§5.3.6.2): on DEVICE_READY it adds
/// every port; it delivers input to a port only once the driver opened it; what a port's
/// transmitq carries is that port's host output.
struct SimConsole<'a> {
    device: SharedMemoryDevice<'a, SimNotifier<'a>>,
    queues: [Option<SplitDeviceQueue<'a>>; NQ],
    to_driver: VecDeque<ControlMessage>,
    /// Control messages the driver sent.
    from_driver: Vec<ControlMessage>,
    output: Vec<Vec<u8>>,
    input: Vec<VecDeque<u8>>,
    guest_open: Vec<bool>,
}

impl SimConsole<'_> {
    fn step(&mut self) -> bool {
        let events = self.device.process_requests().unwrap();
        let mut busy = events != Default::default();
        if events.reset {
            self.queues = [const { None }; NQ];
        }
        for q in 0..NQ {
            if events.queues_enabled & (1 << q) != 0 {
                self.queues[q] = Some(self.device.split_queue(q as u16).unwrap());
            }
        }
        let _ = self.device.take_kicks();
        let area = self.device.data_area();
        let mut interrupts = 0u32;
        // Control transmitq.
        if let Some(q) = self.queues[3].as_mut() {
            while let Some(chain) = q.pop().unwrap() {
                let mut bytes = [0u8; 8];
                chain.reader(&area).read_exact(&mut bytes).unwrap();
                let m = ControlMessage::from_bytes(&bytes);
                self.from_driver.push(m);
                match m.event {
                    event::DEVICE_READY => {
                        for port in 0..DEVICE_PORTS {
                            self.to_driver.push_back(ControlMessage {
                                id: port,
                                event: event::DEVICE_ADD,
                                value: 0,
                            });
                        }
                    }
                    event::PORT_OPEN => self.guest_open[m.id as usize] = m.value == 1,
                    _ => {}
                }
                q.push(&chain, 0).unwrap();
                interrupts |= 1 << 3;
                busy = true;
            }
        }
        // Port transmitqs.
        for port in 0..DEVICE_PORTS as u16 {
            let q = console::queue::tx(port) as usize;
            if let Some(queue) = self.queues[q].as_mut() {
                while let Some(chain) = queue.pop().unwrap() {
                    let mut reader = chain.reader(&area);
                    let mut bytes = vec![0u8; reader.remaining() as usize];
                    reader.read_exact(&mut bytes).unwrap();
                    self.output[usize::from(port)].extend_from_slice(&bytes);
                    queue.push(&chain, 0).unwrap();
                    interrupts |= 1 << q;
                    busy = true;
                }
            }
        }
        // Control receiveq.
        if let Some(q) = self.queues[2].as_mut() {
            while !self.to_driver.is_empty() {
                let Some(chain) = q.pop().unwrap() else { break };
                let m = self.to_driver.pop_front().unwrap();
                let mut writer = chain.writer(&area);
                writer.write(&m.to_bytes()).unwrap();
                q.push(&chain, writer.written()).unwrap();
                interrupts |= 1 << 2;
                busy = true;
            }
        }
        // Port receiveqs: only open ports get input.
        for port in 0..DEVICE_PORTS as u16 {
            let q = console::queue::rx(port) as usize;
            let p = usize::from(port);
            let Some(queue) = self.queues[q].as_mut() else {
                continue;
            };
            while self.guest_open[p] && !self.input[p].is_empty() {
                let Some(chain) = queue.pop().unwrap() else {
                    break;
                };
                let n = (chain.writable_len() as usize).min(self.input[p].len());
                let bytes: Vec<u8> = self.input[p].drain(..n).collect();
                let mut writer = chain.writer(&area);
                writer.write(&bytes).unwrap();
                queue.push(&chain, writer.written()).unwrap();
                interrupts |= 1 << q;
                busy = true;
            }
        }
        for q in 0..NQ {
            if interrupts & (1 << q) != 0
                && self.queues[q]
                    .as_mut()
                    .is_some_and(|q| q.should_interrupt().unwrap())
            {
                self.device.interrupt(q as u16).unwrap();
            }
        }
        busy
    }
}

type Class<'a> = Consoles<VirtioPorts<'a, SharedMemoryTransport<'a, SimNotifier<'a>>>>;
type World<'a> = ioserver::sim::World<'a, Class<'a>, SimConsole<'a>>;

/// A console device in `device_memory` whose driver (the server's backend) uses `ports`.
fn console_world<'a>(device_memory: &'a OwnedDma, ports: &[u32]) -> World<'a> {
    let (console_side, _) = pair(no_pump(), no_pump());
    let mut config = [0u8; console::config::SIZE];
    config[console::config::MAX_NR_PORTS..console::config::MAX_NR_PORTS + 4]
        .copy_from_slice(&DEVICE_PORTS.to_le_bytes());
    let description = DeviceDescription {
        device_type: id::CONSOLE,
        features: Features::from_bits(&[console::features::MULTIPORT]),
        num_queues: NQ as u16,
        max_queue_size: 64,
        config: &config,
    };
    let device =
        SharedMemoryDevice::new(device_memory.region(0), 0x8000, &description, console_side)
            .expect("the simulated console");
    let console = Rc::new(RefCell::new(SimConsole {
        device,
        queues: [const { None }; NQ],
        to_driver: VecDeque::new(),
        from_driver: Vec::new(),
        output: vec![Vec::new(); DEVICE_PORTS as usize],
        input: vec![VecDeque::new(); DEVICE_PORTS as usize],
        guest_open: vec![false; DEVICE_PORTS as usize],
    }));
    let theirs = console.borrow_mut().device.notifier().clone();
    let to_console = driver_end(&theirs, &console, SimConsole::step);
    let transport = SharedMemoryTransport::new(device_memory.region(0), to_console).unwrap();
    // The driver's rings and buffers live in the channel's areas (bus addresses are
    // offsets there), as the device side expects.
    let ring_area = transport.ring_area();
    let data_area = transport.data_area();
    assert!(ring_area.len() >= ring_bytes(ports.len()));
    assert!(data_area.len() >= buffer_bytes(ports.len()));
    let backend =
        VirtioPorts::new(transport, ring_area, data_area, ports, |_, _| Ok(())).expect("backend");
    let world = World::new(console, Consoles::new(backend), SimConsole::step);
    world.run();
    world
}

/// What the tests do with a world: add clients, look at and type into the host sides.
trait Host<'a> {
    fn add(&self, region: DmaRegion<'a>, spec: ConsoleSpec) -> (usize, SimNotifier<'a>);
    fn output(&self, port: usize) -> Vec<u8>;
    fn type_into(&self, port: usize, text: &[u8]);
}

impl<'a> Host<'a> for World<'a> {
    fn add(&self, region: DmaRegion<'a>, spec: ConsoleSpec) -> (usize, SimNotifier<'a>) {
        self.add_client(region, RING_LEN, &spec).unwrap()
    }

    fn output(&self, port: usize) -> Vec<u8> {
        self.device.borrow().output[port].clone()
    }

    fn type_into(&self, port: usize, text: &[u8]) {
        self.device.borrow_mut().input[port].extend(text);
        self.device.borrow_mut().device.interrupt(0).ok();
    }
}

fn attach<'a>(
    region: DmaRegion<'a>,
    notifier: SimNotifier<'a>,
) -> ConsoleClient<'a, SimNotifier<'a>> {
    ConsoleClient::attach(region, notifier, 5).unwrap()
}

fn spec(port: u32, rate: Option<u64>) -> ConsoleSpec {
    ConsoleSpec {
        port,
        rate,
        burst: None,
    }
}

#[test]
fn the_driver_opens_its_ports_and_declines_the_others() {
    let dev = OwnedDma::new(REGION_LEN);
    let world = console_world(&dev, &[1, 3]);
    let sent = world.device.borrow().from_driver.clone();
    assert_eq!(sent[0].event, event::DEVICE_READY);
    for port in 0..DEVICE_PORTS {
        let ready = sent
            .iter()
            .find(|m| m.id == port && m.event == event::PORT_READY)
            .unwrap_or_else(|| panic!("no PORT_READY for port {port}"));
        let ours = port == 1 || port == 3;
        assert_eq!(ready.value, u16::from(ours), "port {port}");
        assert_eq!(world.device.borrow().guest_open[port as usize], ours);
    }
    let mut server = world.server.borrow_mut();
    assert_eq!(
        server.class().ports().port_status(1),
        Some(PortStatus {
            added: true,
            host_open: false,
            console: false
        })
    );
    assert_eq!(server.class().ports().port_status(2), None);
}

#[test]
fn each_client_writes_to_its_own_port_and_reads_its_own_input() {
    let dev = OwnedDma::new(REGION_LEN);
    let (ma, mb) = (OwnedDma::new(REGION_LEN), OwnedDma::new(REGION_LEN));
    let world = console_world(&dev, &[1, 3]);
    let (_, na) = world.add(ma.region(0), spec(3, None));
    let (_, nb) = world.add(mb.region(0), spec(1, None));
    let mut a = attach(ma.region(0), na);
    let mut b = attach(mb.region(0), nb);
    a.write(b"hello from a\r\n").unwrap();
    b.write(b"hello from b\r\n").unwrap();
    // More than one buffer's worth, in order.
    let long: Vec<u8> = (0..2000u32).map(|i| b'a' + (i % 26) as u8).collect();
    a.write(&long).unwrap();
    a.flush().unwrap();
    b.flush().unwrap();
    world.run();
    let mut expect_a = b"hello from a\r\n".to_vec();
    expect_a.extend_from_slice(&long);
    assert_eq!(world.output(3), expect_a);
    assert_eq!(world.output(1), b"hello from b\r\n");
    assert!(world.output(0).is_empty() && world.output(2).is_empty());

    world.type_into(3, b"to a");
    world.type_into(1, b"to b, longer");
    world.run();
    let mut buf = [0u8; 64];
    assert!(a.wait_input().unwrap());
    let n = a.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"to a");
    let n = b.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"to b, longer");
    assert_eq!(a.read(&mut buf).unwrap(), 0);
    // Input larger than the client's buffers arrives whole, in order.
    let long: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    world.type_into(1, &long);
    let mut got = Vec::new();
    while got.len() < long.len() {
        world.run();
        let n = b.read(&mut buf).unwrap();
        assert!(n > 0 || b.wait_input().unwrap());
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, long);
}

#[test]
fn output_over_the_rate_waits_and_others_are_not_held_up() {
    let dev = OwnedDma::new(REGION_LEN);
    let (ma, mb) = (OwnedDma::new(REGION_LEN), OwnedDma::new(REGION_LEN));
    let world = console_world(&dev, &[1, 2]);
    let (ia, na) = world.add(
        ma.region(0),
        ConsoleSpec {
            port: 1,
            rate: Some(100),
            burst: Some(100),
        },
    );
    let (_, nb) = world.add(mb.region(0), spec(2, None));
    let mut a = attach(ma.region(0), na);
    let mut b = attach(mb.region(0), nb);
    // Four buffers' worth: queued at once, forwarded at 100 B/s after a 100-byte burst.
    a.write(&[b'x'; 1000]).unwrap();
    world.run();
    assert_eq!(world.output(1).len(), 100);
    // The unlimited neighbour is served meanwhile.
    b.write(&[b'y'; 3000]).unwrap();
    b.flush().unwrap();
    assert_eq!(world.output(2).len(), 3000);
    assert_eq!(world.output(1).len(), 100);
    let progress = world.server.borrow_mut().run(0);
    assert_eq!(
        progress.wake_at,
        Some(S / 50),
        "2 bytes of credit in 20 ms: at most 50 wake-ups a second"
    );
    world.now.set(S / 2);
    world.run();
    assert_eq!(world.output(1).len(), 150);
    // Idle credit is capped at the burst: 4.5 s later only 100 more bytes may go.
    world.now.set(5 * S);
    world.run();
    assert_eq!(world.output(1).len(), 250);
    // Nothing is dropped: it all arrives, 100 bytes a second, never faster than
    // rate × time + burst.
    for t in 6..=20u64 {
        world.now.set(t * S);
        world.run();
        let out = world.output(1).len() as u64;
        assert_eq!(out, (250 + (t - 5) * 100).min(1000), "at {t} s");
        assert!(out <= 100 + 100 * t);
    }
    assert_eq!(world.output(1), vec![b'x'; 1000]);
    let stats = world.server.borrow().client_stats(ia).unwrap();
    assert_eq!(stats.bytes_out, 1000);
    assert!(stats.throttled >= 3, "{stats:?}");
    a.flush().unwrap();
}

/// A client driving its rings by hand (the conformance suite's plain driver), to send what a
/// correct driver never would.
fn raw_client<'a>(region: DmaRegion<'a>, notifier: SimNotifier<'a>) -> Driver<'a> {
    Driver::attach::<Class<'a>>(region, notifier, Features(0)).unwrap()
}

#[test]
fn malformed_chains_stop_only_that_client_until_it_resets() {
    let dev = OwnedDma::new(REGION_LEN);
    let (mg, mb) = (OwnedDma::new(REGION_LEN), OwnedDma::new(REGION_LEN));
    let world = console_world(&dev, &[1, 2]);
    let (_, ng) = world.add(mg.region(0), spec(1, None));
    let (bad, nb) = world.add(mb.region(0), spec(2, None));
    let mut good = attach(mg.region(0), ng);
    let data_len = raw_client(mb.region(0), nb.clone()).data().len() as u64;

    // (what, queue, readable, writable, input typed first, expected)
    type MalformedCase = (&'static str, u16, Vec<Buffer>, Vec<Buffer>, bool, Broken);
    let cases: [MalformedCase; 4] = [
        (
            "transmit chain with a writable buffer",
            1,
            vec![Buffer { addr: 0, len: 4 }],
            vec![Buffer { addr: 64, len: 4 }],
            false,
            Broken::Class(ConsoleRule::WritableOutput),
        ),
        (
            "transmit buffer outside the data area",
            1,
            vec![Buffer {
                addr: data_len - 2,
                len: 64,
            }],
            vec![],
            false,
            Broken::Queue(virtio::Error::BufferOutsideGrant),
        ),
        (
            "receive chain with a readable buffer",
            0,
            vec![Buffer { addr: 0, len: 4 }],
            vec![Buffer { addr: 64, len: 4 }],
            true,
            Broken::Class(ConsoleRule::ReadableInput),
        ),
        (
            "receive buffer outside the data area",
            0,
            vec![],
            vec![Buffer {
                addr: data_len + 4096,
                len: 16,
            }],
            true,
            Broken::Queue(virtio::Error::BufferOutsideGrant),
        ),
    ];
    for (round, (what, q, readable, writable, input, why)) in cases.into_iter().enumerate() {
        let mut driver = raw_client(mb.region(0), nb.clone());
        assert_eq!(
            world.server.borrow().client_state(bad),
            Some(ClientState::Serving),
            "{what}"
        );
        // A well-formed write first: served.
        driver.data().write_bytes(0, b"ok!\n").unwrap();
        let ok = Request {
            queue: 1,
            readable: vec![Buffer { addr: 0, len: 4 }],
            writable: vec![],
        };
        driver.submit(&ok).unwrap();
        world.run();
        let before = world.output(2).len();
        assert!(world.output(2).ends_with(b"ok!\n"), "{what}");
        assert_eq!(driver.take_used(1), 1, "{what}: the write completed");
        if input {
            world.type_into(2, b"input");
        }
        let request = Request {
            queue: q,
            readable,
            writable,
        };
        driver.submit(&request).unwrap();
        world.run();
        assert_eq!(driver.take_used(q), 0, "{what}: not completed");
        assert_eq!(
            world.server.borrow().client_state(bad),
            Some(ClientState::Broken(why)),
            "{what}"
        );
        assert_ne!(driver.status() & status::DEVICE_NEEDS_RESET, 0, "{what}");
        assert_eq!(
            world.server.borrow().client_stats(bad).unwrap().breaks,
            round as u32 + 1
        );
        // Nothing more of the broken client's reaches its port; the other one is served.
        assert_eq!(world.output(2).len(), before, "{what}");
        good.write(what.as_bytes()).unwrap();
        good.flush().unwrap();
        assert!(world.output(1).ends_with(what.as_bytes()), "{what}");
        world.device.borrow_mut().input[2].clear();
    }
}

#[test]
fn a_client_that_resets_loses_its_pending_output_only() {
    let dev = OwnedDma::new(REGION_LEN);
    let ma = OwnedDma::new(REGION_LEN);
    let world = console_world(&dev, &[1]);
    let (ia, na) = world.add(
        ma.region(0),
        ConsoleSpec {
            port: 1,
            rate: Some(10),
            burst: Some(10),
        },
    );
    let mut a = attach(ma.region(0), na);
    a.write(&[b'z'; 100]).unwrap();
    world.run();
    assert_eq!(world.output(1).len(), 10);
    assert!(matches!(a.flush(), Err(ConsoleError::Timeout)));
    a.reconnect().unwrap();
    world.now.set(100 * S);
    world.run();
    assert_eq!(
        world.output(1).len(),
        10,
        "a reset drops the chain in flight"
    );
    assert_eq!(world.server.borrow().client_stats(ia).unwrap().resets, 1);
    a.write(b"again").unwrap();
    a.flush().unwrap();
    assert!(world.output(1).ends_with(b"again"));
}

#[test]
fn ports_come_from_the_configuration_text() {
    let channels = [
        Keys {
            channel: "con-a",
            pairs: &[("port", "1"), ("rate", "4096")],
        },
        Keys {
            channel: "con-b",
            pairs: &[("port", "1")],
        },
        Keys {
            channel: "con-c",
            pairs: &[("port", "7")],
        },
        Keys {
            channel: "con-d",
            pairs: &[("rate", "10")],
        },
        Keys {
            channel: "con-e",
            pairs: &[("port", "2"), ("burst", "512")],
        },
    ];
    let mut taken = Vec::new();
    let mut results = Vec::new();
    for keys in &channels {
        let channel = keys.channel;
        let result = ConsoleSpec::from_config(
            keys.number("port"),
            keys.number("rate"),
            keys.number("burst"),
            DEVICE_PORTS,
            &taken,
        );
        if let Ok(spec) = result {
            taken.push(spec.port);
        }
        results.push((channel, result));
    }
    assert_eq!(
        results,
        vec![
            (
                "con-a",
                Ok(ConsoleSpec {
                    port: 1,
                    rate: Some(4096),
                    burst: None
                })
            ),
            ("con-b", Err(SpecError::PortTaken)),
            ("con-c", Err(SpecError::PortOutOfRange)),
            ("con-d", Err(SpecError::MissingPort)),
            (
                "con-e",
                Ok(ConsoleSpec {
                    port: 2,
                    rate: None,
                    burst: Some(512)
                })
            ),
        ]
    );
}

/// The framework's conformance suite on the console class: client k's console is port k + 1,
/// a request is one line of output.
struct Conformance<'a> {
    devices: &'a [OwnedDma; 2],
    world: World<'a>,
}

impl<'a> ioserver::conformance::Harness<'a> for Conformance<'a> {
    type Class = Class<'a>;

    fn server(&self) -> Ref<'_, ioserver::Server<'a, SimNotifier<'a>, Class<'a>>> {
        self.world.server.borrow()
    }
    fn add_client(&mut self, k: usize, region: DmaRegion<'a>) -> (usize, SimNotifier<'a>) {
        self.world.add(region, spec(k as u32 + 1, None))
    }
    fn run(&mut self) {
        self.world.run();
    }
    fn request(&mut self, _index: usize, data: &DmaRegion<'a>, at: usize) -> Request {
        data.write_bytes(at, b"conformance\n").unwrap();
        let line = Buffer {
            addr: at as u64,
            len: 12,
        };
        Request {
            queue: console::queue::TX0,
            readable: vec![line],
            writable: vec![],
        }
    }
    fn restart(&mut self) {
        self.world = console_world(&self.devices[1], &[1, 2]);
    }
}

#[test]
fn the_console_class_passes_the_conformance_suite() {
    ioserver::sim::conformance(REGION_LEN, |devices| Conformance {
        devices,
        world: console_world(&devices[0], &[1, 2]),
    })
    .unwrap();
}
