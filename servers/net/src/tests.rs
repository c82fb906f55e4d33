//! The whole path on the host: `net_client::NetClient` (and a hostile raw driver) →
//! inter-partition transport → [`Server`] → [`VirtioUplink`] → inter-partition transport → a
//! simulated wire served by the library's device side. Notifications are simulated: a
//! client's wait runs the wire and the server until they are quiet.

use std::cell::{Ref, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use ioserver::conformance::Request;
use net_client::NetClient;
use virtio::devices::{id, net};
use virtio::dma::{DmaRegion, OwnedDma};
use virtio::features::{Features, bits, status};
use virtio::queue::{Buffer, DeviceQueue, DriverQueue};
use virtio::split::{SplitDeviceQueue, SplitQueue};
use virtio::transport::shmem::sim::{Pump, SimNotifier, no_pump, pair};
use virtio::transport::shmem::{
    DeviceDescription, Notifier, SharedMemoryDevice, SharedMemoryTransport,
};
use virtio::transport::{Transport, initialize};

use crate::server::{Broken, ClientState, HEADER, NetRule, Network, Server};
use crate::switch::{FrameError, MAX_FRAME, Mac, Port, Switch, SwitchError, Targets, parse_mac};
use crate::uplink::VirtioUplink;

const REGION_LEN: usize = 0x4_0000;
const RING_LEN: usize = 0x4000;
const MAC_A: Mac = [0x52, 0x54, 0, 0x12, 0x34, 0x61];
const MAC_B: Mac = [0x52, 0x54, 0, 0x12, 0x34, 0x62];
const MAC_C: Mac = [0x52, 0x54, 0, 0x12, 0x34, 0x63];
const HOST: Mac = [0x52, 0x55, 10, 0, 2, 2];
const BROADCAST: Mac = [0xff; 6];

/// The far side of the uplink: a virtio-net device whose wire is two frame queues.
struct Wire<'a> {
    device: SharedMemoryDevice<'a, SimNotifier<'a>>,
    rx: Option<SplitDeviceQueue<'a>>,
    tx: Option<SplitDeviceQueue<'a>>,
    /// Frames the NIC sent (what the host saw).
    sent: Vec<Vec<u8>>,
    /// Frames waiting to be received by the NIC (from the host).
    incoming: VecDeque<Vec<u8>>,
}

impl Wire<'_> {
    fn step(&mut self) -> bool {
        let events = self.device.process_requests().unwrap();
        let mut busy = events.queues_enabled != 0 || events.driver_ok;
        if events.queues_enabled & 1 != 0 {
            self.rx = Some(self.device.split_queue(0).unwrap());
        }
        if events.queues_enabled & 2 != 0 {
            self.tx = Some(self.device.split_queue(1).unwrap());
        }
        let _ = self.device.take_kicks();
        let area = self.device.data_area();
        if let Some(tx) = self.tx.as_mut() {
            let mut pushed = false;
            while let Some(chain) = tx.pop().unwrap() {
                let mut bytes = vec![0u8; chain.readable_len() as usize];
                chain.reader(&area).read_exact(&mut bytes).unwrap();
                self.sent.push(bytes[HEADER..].to_vec());
                tx.push(&chain, 0).unwrap();
                pushed = true;
                busy = true;
            }
            if pushed && tx.should_interrupt().unwrap() {
                self.device.interrupt(1).unwrap();
            }
        }
        if let Some(rx) = self.rx.as_mut() {
            let mut pushed = false;
            while !self.incoming.is_empty() {
                let Some(chain) = rx.pop().unwrap() else {
                    break;
                };
                let frame = self.incoming.pop_front().unwrap();
                let mut writer = chain.writer(&area);
                let header = net::Header {
                    num_buffers: 1,
                    ..Default::default()
                };
                writer.write(&header.to_bytes()).unwrap();
                writer.write(&frame).unwrap();
                rx.push(&chain, writer.written()).unwrap();
                pushed = true;
                busy = true;
            }
            if pushed && rx.should_interrupt().unwrap() {
                self.device.interrupt(0).unwrap();
            }
        }
        busy
    }
}

type Up<'a> = VirtioUplink<'a, SharedMemoryTransport<'a, SimNotifier<'a>>, 256>;
type Srv<'a> = Server<'a, Up<'a>, SimNotifier<'a>>;

struct World<'a> {
    wire: Rc<RefCell<Wire<'a>>>,
    server: Rc<RefCell<Srv<'a>>>,
    pump: Pump<'a>,
}

impl<'a> World<'a> {
    fn new(nic_memory: &'a OwnedDma, uplink_dma: &'a OwnedDma) -> Self {
        let (wire_notifier, uplink_notifier) = pair(no_pump(), no_pump());
        let mut config = [0u8; 8];
        config[..6].copy_from_slice(&[0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        config[6] = 1;
        let description = DeviceDescription {
            device_type: id::NET,
            features: Features::from_bits(&[net::features::MAC, net::features::STATUS]),
            num_queues: 2,
            max_queue_size: 256,
            config: &config,
        };
        let device =
            SharedMemoryDevice::new(nic_memory.region(0), 0x8000, &description, wire_notifier)
                .unwrap();
        let wire = Rc::new(RefCell::new(Wire {
            device,
            rx: None,
            tx: None,
            sent: Vec::new(),
            incoming: VecDeque::new(),
        }));
        // The uplink's buffers must be in the wire's data area: the shared-memory transport
        // names buffers by data-area offset. Its initialisation waits for the wire, so its
        // notifier runs the wire.
        let _ = (uplink_dma, uplink_notifier);
        let transport = SharedMemoryTransport::new(
            nic_memory.region(0),
            SimNotifier {
                pump: {
                    let wire = wire.clone();
                    Rc::new(RefCell::new(Some(Box::new(move || {
                        wire.borrow_mut().step();
                    })
                        as Box<dyn FnMut() + 'a>)))
                },
                ..wire.borrow_mut().device.notifier().clone()
            },
        )
        .unwrap();
        let ring = transport.ring_area();
        let data = transport.data_area();
        let (rx_ring, tx_ring) = (
            ring.subregion(0, 0x4000).unwrap(),
            ring.subregion(0x4000, 0x4000).unwrap(),
        );
        let uplink = VirtioUplink::new(transport, rx_ring, tx_ring, data, |_| Ok(())).unwrap();
        let server = Rc::new(RefCell::new(Server::new(Network::new(uplink, 64))));
        let pump: Pump<'a> = no_pump();
        {
            let (server, wire) = (server.clone(), wire.clone());
            *pump.borrow_mut() = Some(Box::new(move || {
                for _ in 0..1000 {
                    let a = wire.borrow_mut().step();
                    let b = server.borrow_mut().run_once(0).busy;
                    if !a && !b {
                        break;
                    }
                }
            }));
        }
        Self { wire, server, pump }
    }

    fn add(&self, region: DmaRegion<'a>, mac: Mac) -> (usize, SimNotifier<'a>) {
        let (server_side, client_side) = pair(no_pump(), self.pump.clone());
        let index = self
            .server
            .borrow_mut()
            .add_client(region, RING_LEN, &mac, 0, server_side)
            .unwrap();
        (index, client_side)
    }

    fn run(&self) {
        if let Some(run) = self.pump.borrow_mut().as_mut() {
            run();
        }
    }

    fn host_sends(&self, frame: Vec<u8>) {
        self.wire.borrow_mut().incoming.push_back(frame);
        self.run();
    }

    fn host_saw(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.wire.borrow_mut().sent)
    }
}

fn frame(dst: Mac, src: Mac, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5]); // local experimental EtherType
    f.extend_from_slice(payload);
    f
}

fn recv_all<N: Notifier + Clone>(client: &mut NetClient<'_, N>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; MAX_FRAME];
    while let Some(n) = client.receive(&mut buf).unwrap() {
        out.push(buf[..n].to_vec());
    }
    out
}

#[test]
fn switch_routes_by_destination_and_enforces_source() {
    let mut switch = Switch::new();
    switch.add_client(0, MAC_A).unwrap();
    switch.add_client(1, MAC_B).unwrap();
    assert_eq!(switch.add_client(2, MAC_A), Err(SwitchError::DuplicateMac));
    assert_eq!(
        switch.add_client(2, BROADCAST),
        Err(SwitchError::MulticastMac)
    );
    assert_eq!(switch.add_client(8, MAC_C), Err(SwitchError::BadPort));
    let a = Port::Client(0);
    let t = |clients, uplink| Ok(Targets { clients, uplink });
    assert_eq!(
        switch.route(a, &frame(BROADCAST, MAC_A, b"x")),
        t(0b10, true)
    );
    assert_eq!(
        switch.route(a, &frame([0x01, 0, 0x5e, 0, 0, 1], MAC_A, b"")),
        t(0b10, true)
    );
    assert_eq!(switch.route(a, &frame(MAC_B, MAC_A, b"")), t(0b10, false));
    assert_eq!(switch.route(a, &frame(HOST, MAC_A, b"")), t(0, true));
    assert_eq!(switch.route(a, &frame(MAC_A, MAC_A, b"")), t(0, false));
    assert_eq!(
        switch.route(a, &frame(HOST, MAC_B, b"")),
        Err(FrameError::SpoofedSource)
    );
    assert_eq!(
        switch.route(a, &frame(HOST, BROADCAST, b"")),
        Err(FrameError::MulticastSource)
    );
    assert_eq!(
        switch.route(a, &frame(HOST, MAC_A, b"")[..13]),
        Err(FrameError::TooShort)
    );
    assert_eq!(
        switch.route(a, &frame(HOST, MAC_A, &[0; 1501])),
        Err(FrameError::TooLong)
    );
    assert_eq!(switch.route(a, &frame(HOST, MAC_A, &[0; 1500])), t(0, true));
    let up = Port::Uplink;
    assert_eq!(
        switch.route(up, &frame(BROADCAST, HOST, b"")),
        t(0b11, false)
    );
    assert_eq!(switch.route(up, &frame(MAC_B, HOST, b"")), t(0b10, false));
    assert_eq!(switch.route(up, &frame(MAC_C, HOST, b"")), t(0, false));
    assert_eq!(
        switch.route(up, &frame(MAC_B, MAC_A, b"")),
        Err(FrameError::SpoofedSource)
    );
}

#[test]
fn macs_parse() {
    assert_eq!(parse_mac("52:54:00:12:34:61"), Some(MAC_A));
    assert_eq!(parse_mac("\"52-54-00-12-34-61\""), Some(MAC_A));
    assert_eq!(parse_mac("52:54:00:12:34"), None);
    assert_eq!(parse_mac("52:54:00:12:34:61:00"), None);
    assert_eq!(parse_mac("52:54:00:12:34:6"), None);
    assert_eq!(parse_mac("52:54:00:12:34:zz"), None);
}

#[test]
fn clients_see_their_mac_and_frames_are_switched() {
    let (nic, dma) = (OwnedDma::new(REGION_LEN), OwnedDma::new(0x1000));
    let (ra, rb) = (OwnedDma::new(REGION_LEN), OwnedDma::new(REGION_LEN));
    let world = World::new(&nic, &dma);
    let (_, na) = world.add(ra.region(0), MAC_A);
    let (_, nb) = world.add(rb.region(0), MAC_B);
    let mut a: NetClient<'_, _> = NetClient::attach(ra.region(0), na).unwrap();
    let mut b: NetClient<'_, _> = NetClient::attach(rb.region(0), nb).unwrap();
    assert_eq!(a.mac(), MAC_A);
    assert_eq!(b.mac(), MAC_B);
    assert!(a.link_up() && b.link_up());
    world.run();
    let s = world.server.borrow();
    assert_eq!(s.client_state(0), Some(ClientState::Serving));
    assert_eq!(s.client_state(1), Some(ClientState::Serving));
    drop(s);

    // A to the host: out of the uplink, unchanged; B sees nothing.
    let out = frame(HOST, MAC_A, b"hello host");
    a.transmit(&out).unwrap();
    world.run();
    assert_eq!(world.host_saw(), vec![out]);
    assert!(recv_all(&mut b).is_empty());

    // The host to B: only B.
    let to_b = frame(MAC_B, HOST, b"for b");
    world.host_sends(to_b.clone());
    assert_eq!(recv_all(&mut b), vec![to_b]);
    assert!(recv_all(&mut a).is_empty());

    // The host to an unknown MAC: nobody.
    world.host_sends(frame(MAC_C, HOST, b"nobody"));
    assert!(recv_all(&mut a).is_empty() && recv_all(&mut b).is_empty());
    assert_eq!(
        world
            .server
            .borrow()
            .class_ref()
            .stats()
            .unknown_destination,
        1
    );

    // Broadcast from the host: both.
    let bc = frame(BROADCAST, HOST, b"arp?");
    world.host_sends(bc.clone());
    assert_eq!(recv_all(&mut a), vec![bc.clone()]);
    assert_eq!(recv_all(&mut b), vec![bc]);

    // A to B directly: B only, never the uplink.
    let ab = frame(MAC_B, MAC_A, b"neighbour");
    a.transmit(&ab).unwrap();
    world.run();
    assert_eq!(recv_all(&mut b), vec![ab]);
    assert!(world.host_saw().is_empty());

    // Broadcast from B: A and the uplink, not B.
    let bb = frame(BROADCAST, MAC_B, b"who has");
    b.transmit(&bb).unwrap();
    world.run();
    assert_eq!(recv_all(&mut a), vec![bb.clone()]);
    assert_eq!(world.host_saw(), vec![bb]);
    assert!(recv_all(&mut b).is_empty());

    // Many frames: more than either ring holds, in both directions.
    for i in 0..200u32 {
        a.transmit(&frame(HOST, MAC_A, &i.to_le_bytes()))
            .unwrap_or_else(|_| {
                world.run();
                a.transmit(&frame(HOST, MAC_A, &i.to_le_bytes())).unwrap()
            });
        if i % 8 == 0 {
            world.run();
        }
    }
    world.run();
    let seen = world.host_saw();
    assert_eq!(seen.len(), 200);
    for (i, f) in seen.iter().enumerate() {
        assert_eq!(f[14..], (i as u32).to_le_bytes());
    }
    for i in 0..100u32 {
        world.host_sends(frame(MAC_A, HOST, &i.to_le_bytes()));
        let got = recv_all(&mut a);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0][14..], i.to_le_bytes());
    }
    let stats = world.server.borrow().client_stats(0).unwrap();
    assert_eq!(stats.tx_frames, 202);
    assert_eq!(stats.spoofed + stats.malformed + stats.rx_no_buffer, 0);
}

#[test]
fn a_spoofing_client_is_dropped_and_counted_and_others_go_on() {
    let (nic, dma) = (OwnedDma::new(REGION_LEN), OwnedDma::new(0x1000));
    let (ra, rb) = (OwnedDma::new(REGION_LEN), OwnedDma::new(REGION_LEN));
    let world = World::new(&nic, &dma);
    let (_, na) = world.add(ra.region(0), MAC_A);
    let (_, nb) = world.add(rb.region(0), MAC_B);
    let mut a: NetClient<'_, _> = NetClient::attach(ra.region(0), na).unwrap();
    let mut b: NetClient<'_, _> = NetClient::attach(rb.region(0), nb).unwrap();
    world.run();
    // A pretends to be B (to the host, and to B itself), and to be a group address.
    a.transmit(&frame(HOST, MAC_B, b"spoof")).unwrap();
    a.transmit(&frame(BROADCAST, MAC_B, b"spoof")).unwrap();
    a.transmit(&frame(HOST, MAC_C, b"spoof")).unwrap();
    a.transmit(&frame(HOST, BROADCAST, b"spoof")).unwrap();
    world.run();
    assert!(world.host_saw().is_empty());
    assert!(recv_all(&mut b).is_empty());
    let stats = world.server.borrow().client_stats(0).unwrap();
    assert_eq!(stats.spoofed, 4);
    assert_eq!(stats.tx_frames, 0);
    // ... and it is still served, as is B.
    assert_eq!(
        world.server.borrow().client_state(0),
        Some(ClientState::Serving)
    );
    let ok = frame(HOST, MAC_A, b"honest");
    a.transmit(&ok).unwrap();
    let from_b = frame(HOST, MAC_B, b"b");
    b.transmit(&from_b).unwrap();
    world.run();
    assert_eq!(world.host_saw(), vec![ok, from_b]);
    // The uplink claiming a client's MAC is refused too.
    world.host_sends(frame(MAC_B, MAC_A, b"fake a"));
    assert!(recv_all(&mut b).is_empty());
    assert_eq!(world.server.borrow().class_ref().stats().uplink_refused, 1);
}

/// A client driving the queues itself, to send what a correct driver never would.
struct RawClient<'a> {
    transport: SharedMemoryTransport<'a, SimNotifier<'a>>,
    rx: SplitQueue<'a, 32>,
    tx: SplitQueue<'a, 32>,
    data: DmaRegion<'a>,
}

impl<'a> RawClient<'a> {
    fn attach(region: DmaRegion<'a>, notifier: SimNotifier<'a>) -> Self {
        let mut transport = SharedMemoryTransport::new(region, notifier).unwrap();
        let ring = transport.ring_area();
        let data = transport.data_area();
        let mut queues = None;
        initialize(
            &mut transport,
            Features::from_bits(&[net::features::MAC]),
            |t, negotiated| {
                let rx = SplitQueue::<32>::new(ring.subregion(0, 0x2000)?, negotiated, false)?;
                let tx = SplitQueue::<32>::new(ring.subregion(0x2000, 0x2000)?, negotiated, false)?;
                t.enable_queue(0, rx.size(), rx.addresses())?;
                t.enable_queue(1, tx.size(), tx.addresses())?;
                queues = Some((rx, tx));
                Ok(())
            },
        )
        .unwrap();
        let (rx, tx) = queues.unwrap();
        Self {
            transport,
            rx,
            tx,
            data,
        }
    }

    /// Sends a chain of `readable` data-area ranges, plus `writable` ones.
    fn send(&mut self, readable: &[Buffer], writable: &[Buffer]) {
        self.tx.submit(readable, writable).unwrap();
        self.transport.notify(1).unwrap();
    }

    /// Writes `bytes` at data-area offset `at` and names them.
    fn put(&self, at: usize, bytes: &[u8]) -> Buffer {
        self.data.write_bytes(at, bytes).unwrap();
        Buffer {
            addr: at as u64,
            len: bytes.len() as u32,
        }
    }
}

fn header(flags: u8, gso: u8) -> [u8; HEADER] {
    net::Header {
        flags,
        gso_type: gso,
        ..Default::default()
    }
    .to_bytes()
}

#[test]
fn malformed_frames_are_dropped_and_the_client_goes_on() {
    let (nic, dma) = (OwnedDma::new(REGION_LEN), OwnedDma::new(0x1000));
    let (ra, rb) = (OwnedDma::new(REGION_LEN), OwnedDma::new(REGION_LEN));
    let world = World::new(&nic, &dma);
    let (_, na) = world.add(ra.region(0), MAC_A);
    let (_, nb) = world.add(rb.region(0), MAC_B);
    let mut raw = RawClient::attach(ra.region(0), na);
    let mut b: NetClient<'_, _> = NetClient::attach(rb.region(0), nb).unwrap();
    world.run();
    let good = frame(HOST, MAC_A, b"ok");
    // Header only; header and half an Ethernet header; a header asking for checksum offload;
    // a GSO frame; a device-writable buffer in a transmit chain; a frame over 1514 bytes.
    let h = raw.put(0, &header(0, 0));
    let short = raw.put(64, &good[..10]);
    raw.send(&[h], &[]);
    raw.send(&[h, short], &[]);
    let csum = raw.put(128, &header(net::header_flags::NEEDS_CSUM, 0));
    let body = raw.put(256, &good);
    raw.send(&[csum, body], &[]);
    let gso = raw.put(192, &header(0, net::gso::TCPV4));
    raw.send(&[gso, body], &[]);
    let w = Buffer {
        addr: 4096,
        len: 64,
    };
    raw.send(&[h, body], &[w]);
    let big = raw.put(8192, &frame(HOST, MAC_A, &[7; 1501]));
    raw.send(&[h, big], &[]);
    world.run();
    assert!(world.host_saw().is_empty());
    let stats = world.server.borrow().client_stats(0).unwrap();
    assert_eq!(stats.malformed, 6);
    assert_eq!(
        world.server.borrow().client_state(0),
        Some(ClientState::Serving)
    );
    // Every buffer came back.
    let mut returned = 0;
    while raw.tx.poll_used().unwrap().is_some() {
        returned += 1;
    }
    assert_eq!(returned, 6);
    // The header and frame split anywhere are fine (VERSION_1 implies any layout).
    let whole = raw.put(12288, &[&header(0, 0)[..], &good[..]].concat());
    let part1 = Buffer {
        addr: 12288,
        len: 5,
    };
    let part2 = Buffer {
        addr: 12293,
        len: whole.len - 5,
    };
    raw.send(&[part1, part2], &[]);
    world.run();
    assert_eq!(world.host_saw(), vec![good]);
    // B was never disturbed.
    let from_b = frame(HOST, MAC_B, b"b");
    b.transmit(&from_b).unwrap();
    world.run();
    assert_eq!(world.host_saw(), vec![from_b]);
}

#[test]
fn broken_queues_stop_only_that_client_until_it_resets() {
    let (nic, dma) = (OwnedDma::new(REGION_LEN), OwnedDma::new(0x1000));
    let (ra, rb, rc) = (
        OwnedDma::new(REGION_LEN),
        OwnedDma::new(REGION_LEN),
        OwnedDma::new(REGION_LEN),
    );
    let world = World::new(&nic, &dma);
    let (_, na) = world.add(ra.region(0), MAC_A);
    let (_, nb) = world.add(rb.region(0), MAC_B);
    let (_, nc) = world.add(rc.region(0), MAC_C);
    let mut raw = RawClient::attach(ra.region(0), na.clone());
    let mut small = RawClient::attach(rc.region(0), nc);
    let mut b: NetClient<'_, _> = NetClient::attach(rb.region(0), nb).unwrap();
    world.run();

    // A names a buffer outside its data area: a ring protocol error.
    let outside = Buffer {
        addr: (REGION_LEN * 4) as u64,
        len: 100,
    };
    raw.send(&[outside], &[]);
    world.run();
    assert!(matches!(
        world.server.borrow().client_state(0),
        Some(ClientState::Broken(Broken::Queue(_)))
    ));
    assert_ne!(raw.transport.status() & status::DEVICE_NEEDS_RESET, 0);

    // C posts a receive buffer too small for a full frame: broken when a frame arrives.
    small
        .rx
        .submit(&[], &[Buffer { addr: 0, len: 100 }])
        .unwrap();
    world.host_sends(frame(BROADCAST, HOST, b"to all"));
    assert_eq!(
        world.server.borrow().client_state(2),
        Some(ClientState::Broken(Broken::Class(NetRule::BadRxBuffer)))
    );

    // B still gets the broadcast and still sends.
    assert_eq!(recv_all(&mut b).len(), 1);
    let from_b = frame(HOST, MAC_B, b"still here");
    b.transmit(&from_b).unwrap();
    world.run();
    assert_eq!(world.host_saw(), vec![from_b]);

    // A resets and attaches properly: served again.
    let mut a: NetClient<'_, _> = NetClient::attach(ra.region(0), na).unwrap();
    world.run();
    assert_eq!(
        world.server.borrow().client_state(0),
        Some(ClientState::Serving)
    );
    let stats = world.server.borrow().client_stats(0).unwrap();
    assert_eq!((stats.breaks, stats.resets), (1, 1));
    let ok = frame(HOST, MAC_A, b"back");
    a.transmit(&ok).unwrap();
    world.run();
    assert_eq!(world.host_saw(), vec![ok]);
}

#[test]
fn frames_for_a_client_without_buffers_are_counted_and_dropped() {
    let (nic, dma) = (OwnedDma::new(REGION_LEN), OwnedDma::new(0x1000));
    let ra = OwnedDma::new(REGION_LEN);
    let world = World::new(&nic, &dma);
    let (_, na) = world.add(ra.region(0), MAC_A);
    let mut a: NetClient<'_, _> = NetClient::attach(ra.region(0), na).unwrap();
    world.run();
    // 32 buffers posted; 40 frames arrive before the client looks.
    for i in 0..40u8 {
        world
            .wire
            .borrow_mut()
            .incoming
            .push_back(frame(MAC_A, HOST, &[i]));
    }
    world.run();
    let got = recv_all(&mut a);
    assert_eq!(got.len(), 32);
    assert_eq!(
        world.server.borrow().client_stats(0).unwrap().rx_no_buffer,
        8
    );
    // Buffers were re-posted: the next frame arrives.
    world.host_sends(frame(MAC_A, HOST, b"later"));
    assert_eq!(recv_all(&mut a).len(), 1);
}

#[test]
fn a_client_can_reject_the_offer_without_harm() {
    // A client asking for a feature the server does not offer gets no FEATURES_OK.
    let (nic, dma) = (OwnedDma::new(REGION_LEN), OwnedDma::new(0x1000));
    let ra = OwnedDma::new(REGION_LEN);
    let world = World::new(&nic, &dma);
    let (_, na) = world.add(ra.region(0), MAC_A);
    let mut t = SharedMemoryTransport::new(ra.region(0), na).unwrap();
    t.set_status(status::ACKNOWLEDGE | status::DRIVER);
    t.set_driver_features(Features::from_bits(&[bits::VERSION_1, net::features::CSUM]));
    t.set_status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
    assert_eq!(t.status() & status::FEATURES_OK, 0);
    assert_eq!(
        world.server.borrow().client_state(0),
        Some(ClientState::Idle)
    );
}

/// smoltcp on both ends: a UDP echo service in a client answers a "host" stack on the far
/// side of the uplink, through ARP (broadcast through the switch) and the smoltcp adapter.
#[test]
fn smoltcp_udp_echo_through_the_switch() {
    use smoltcp::iface::{Config, Interface, SocketSet, SocketStorage};
    use smoltcp::phy::{ChecksumCapabilities, Device, DeviceCapabilities, Medium};
    use smoltcp::socket::udp;
    use smoltcp::time::Instant;
    use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};

    /// The host's NIC: frames to and from the wire.
    struct HostNic<'w, 'a>(&'w RefCell<Wire<'a>>);
    struct HostRx(Vec<u8>);
    struct HostTx<'w, 'a>(&'w RefCell<Wire<'a>>);
    impl smoltcp::phy::RxToken for HostRx {
        fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
            f(&self.0)
        }
    }
    impl smoltcp::phy::TxToken for HostTx<'_, '_> {
        fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
            let mut buf = vec![0u8; len];
            let r = f(&mut buf);
            self.0.borrow_mut().incoming.push_back(buf);
            r
        }
    }
    impl<'w, 'a> Device for HostNic<'w, 'a> {
        type RxToken<'b>
            = HostRx
        where
            Self: 'b;
        type TxToken<'b>
            = HostTx<'w, 'a>
        where
            Self: 'b;
        fn receive(&mut self, _: Instant) -> Option<(HostRx, HostTx<'w, 'a>)> {
            let mut wire = self.0.borrow_mut();
            if wire.sent.is_empty() {
                return None;
            }
            let f = wire.sent.remove(0);
            Some((HostRx(f), HostTx(self.0)))
        }
        fn transmit(&mut self, _: Instant) -> Option<HostTx<'w, 'a>> {
            Some(HostTx(self.0))
        }
        fn capabilities(&self) -> DeviceCapabilities {
            let mut caps = DeviceCapabilities::default();
            caps.medium = Medium::Ethernet;
            caps.max_transmission_unit = 1514;
            caps.checksum = ChecksumCapabilities::default();
            caps
        }
    }

    let (nic, dma) = (OwnedDma::new(REGION_LEN), OwnedDma::new(0x1000));
    let ra = OwnedDma::new(REGION_LEN);
    let world = World::new(&nic, &dma);
    let (_, na) = world.add(ra.region(0), MAC_A);
    let client: NetClient<'_, _> = NetClient::attach(ra.region(0), na).unwrap();
    let mut guest = net_client::SmolNic::new(client);
    let now = Instant::from_millis(0);
    let mut giface = Interface::new(
        Config::new(HardwareAddress::Ethernet(EthernetAddress(MAC_A))),
        &mut guest,
        now,
    );
    giface.update_ip_addrs(|a| {
        a.push(IpCidr::new(IpAddress::v4(10, 0, 2, 15), 24))
            .unwrap();
    });
    let mut host_nic = HostNic(&world.wire);
    let mut hiface = Interface::new(
        Config::new(HardwareAddress::Ethernet(EthernetAddress(HOST))),
        &mut host_nic,
        now,
    );
    hiface.update_ip_addrs(|a| {
        a.push(IpCidr::new(IpAddress::v4(10, 0, 2, 2), 24)).unwrap();
    });
    fn udp_socket() -> udp::Socket<'static> {
        let buffer = || {
            udp::PacketBuffer::new(
                &mut Box::leak(Box::new([udp::PacketMetadata::EMPTY; 4]))[..],
                &mut Box::leak(Box::new([0u8; 4096]))[..],
            )
        };
        udp::Socket::new(buffer(), buffer())
    }
    let mut gstore = [SocketStorage::EMPTY; 2];
    let mut hstore = [SocketStorage::EMPTY; 2];
    let mut gsockets = SocketSet::new(&mut gstore[..]);
    let mut hsockets = SocketSet::new(&mut hstore[..]);
    let mut gs = udp_socket();
    gs.bind(7).unwrap();
    let mut hs = udp_socket();
    hs.bind(40000).unwrap();
    let gh = gsockets.add(gs);
    let hh = hsockets.add(hs);
    hsockets
        .get_mut::<udp::Socket>(hh)
        .send_slice(
            b"ping through the switch",
            (Ipv4Address::new(10, 0, 2, 15), 7),
        )
        .unwrap();
    let mut answer = None;
    for ms in 0..200 {
        let now = Instant::from_millis(ms);
        hiface.poll(now, &mut host_nic, &mut hsockets);
        world.run();
        giface.poll(now, &mut guest, &mut gsockets);
        let s = gsockets.get_mut::<udp::Socket>(gh);
        let mut buf = [0u8; 64];
        if let Ok((n, meta)) = s.recv_slice(&mut buf) {
            s.send_slice(&buf[..n], meta.endpoint).unwrap();
        }
        giface.poll(now, &mut guest, &mut gsockets);
        world.run();
        hiface.poll(now, &mut host_nic, &mut hsockets);
        let mut buf = [0u8; 64];
        if let Ok((n, _)) = hsockets.get_mut::<udp::Socket>(hh).recv_slice(&mut buf) {
            answer = Some(buf[..n].to_vec());
            break;
        }
    }
    assert_eq!(answer.as_deref(), Some(&b"ping through the switch"[..]));
    assert!(guest.error.is_none());
    let stats = world.server.borrow().client_stats(0).unwrap();
    assert!(stats.tx_frames >= 2 && stats.rx_frames >= 2, "{stats:?}");
}

/// The framework's conformance suite on the network class: client k has MAC …:6(1+k), and its
/// well-formed request is one frame to the host (taken, its buffer returned, sent out).
struct Conformance<'a> {
    nics: &'a [OwnedDma; 2],
    world: World<'a>,
}

fn conformance_mac(k: usize) -> Mac {
    [0x52, 0x54, 0, 0x12, 0x34, 0x61 + k as u8]
}

impl<'a> ioserver::conformance::Harness<'a> for Conformance<'a> {
    type Class = Network<Up<'a>>;

    fn driver_features(&self) -> Features {
        Features::from_bits(&[bits::VERSION_1, net::features::MAC])
    }
    fn server(&self) -> Ref<'_, Srv<'a>> {
        self.world.server.borrow()
    }
    fn add_client(&mut self, k: usize, region: DmaRegion<'a>) -> (usize, SimNotifier<'a>) {
        self.world.add(region, conformance_mac(k))
    }
    fn request(&mut self, index: usize, data: &DmaRegion<'a>, at: usize) -> Request {
        let mut bytes = header(0, 0).to_vec();
        bytes.extend(frame(HOST, conformance_mac(index), b"conformance"));
        data.write_bytes(at, &bytes).unwrap();
        let frame = Buffer {
            addr: at as u64,
            len: bytes.len() as u32,
        };
        Request {
            queue: net::queue::TX,
            readable: vec![frame],
            writable: vec![],
        }
    }
    fn restart(&mut self) {
        self.world = World::new(&self.nics[1], &self.nics[1]);
    }
    fn run(&mut self) {
        self.world.run();
    }
}

#[test]
fn the_network_class_passes_the_conformance_suite() {
    ioserver::sim::conformance(REGION_LEN, |nics| Conformance {
        nics,
        world: World::new(&nics[0], &nics[0]),
    })
    .unwrap();
}
