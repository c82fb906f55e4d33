//! The whole path on the host: `blk_client::BlkClient` → inter-partition transport →
//! [`Server`] → [`VirtioBackend`] → inter-partition transport → a simulated disk with a
//! volatile write cache, served by the library's device side. Notifications are simulated:
//! a client that waits runs the server and the disk until they are quiet, as a blocked
//! partition lets the others run.

use std::cell::{Ref, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use blk_client::{BlkClient, BlkError, Op as ClientOp, Options};
use ioserver::conformance::{Driver, Request};
use ioserver::sim::Keys;
use ioserver::{DeviceClass, DeviceInterrupts, Settings};
use virtio::devices::{blk, id};
use virtio::dma::{DmaRegion, OwnedDma};
use virtio::features::{Features, status};
use virtio::queue::{Buffer, DeviceQueue};
use virtio::split::SplitDeviceQueue;
use virtio::transport::shmem::sim::{Pump, SimNotifier, no_pump, pair};
use virtio::transport::shmem::{
    ChannelEvents, DeviceDescription, SharedMemoryDevice, SharedMemoryTransport,
};

use crate::backend::{Backend, Op, VirtioBackend};
use crate::disk::{DiskSpec, SpecError};
use crate::server::{BlkRule, Block, BlockSpec, Broken, ClientState, Server, Tables};

const DISK_SECTORS: u64 = 4096;
const REGION_LEN: usize = 0x4_0000;
const RING_LEN: usize = 0x4000;
const SECTOR: usize = 512;

/// A disk with a volatile write cache: writes land in `cache`, a flush moves them to
/// `durable`, a crash loses the cache. With `hold` set it takes requests but completes none
/// until released; a read that covers sector `bad` fails (a media error).
struct SimDisk<'a> {
    device: SharedMemoryDevice<'a, SimNotifier<'a>>,
    queue: Option<SplitDeviceQueue<'a>>,
    durable: Vec<u8>,
    cache: BTreeMap<u64, Vec<u8>>,
    hold: bool,
    bad: Option<u64>,
    held: Vec<virtio::queue::Chain>,
    /// Every request that reached the device: (type, sector, data bytes).
    log: Vec<(u32, u64, u64)>,
}

impl SimDisk<'_> {
    fn step(&mut self) -> bool {
        let events = self.device.process_requests().unwrap();
        let mut busy = events != ChannelEvents::default();
        if events.reset {
            self.queue = None;
            self.held.clear();
        }
        if events.queues_enabled & 1 != 0 {
            self.queue = Some(self.device.split_queue(0).unwrap());
        }
        let _ = self.device.take_kicks();
        let Some(mut queue) = self.queue.take() else {
            return busy;
        };
        let area = self.device.data_area();
        while let Some(chain) = queue.pop().unwrap() {
            busy = true;
            let mut header = [0u8; 16];
            chain.reader(&area).read_exact(&mut header).unwrap();
            let header = blk::RequestHeader::from_bytes(&header);
            let bytes = match header.request_type {
                blk::request_type::IN => chain.writable_len() - 1,
                blk::request_type::OUT => chain.readable_len() - 16,
                _ => 0,
            };
            self.log.push((header.request_type, header.sector, bytes));
            self.held.push(chain);
        }
        let mut pushed = false;
        if !self.hold {
            for chain in std::mem::take(&mut self.held) {
                let written = self.serve(&chain, &area);
                queue.push(&chain, written).unwrap();
                pushed = true;
                busy = true;
            }
        }
        if pushed && queue.should_interrupt().unwrap() {
            self.device.interrupt(0).unwrap();
        }
        self.queue = Some(queue);
        busy
    }

    fn serve(
        &mut self,
        chain: &virtio::queue::Chain,
        area: &virtio::queue::GrantedArea<'_>,
    ) -> u32 {
        let mut reader = chain.reader(area);
        let mut header = [0u8; 16];
        reader.read_exact(&mut header).unwrap();
        let header = blk::RequestHeader::from_bytes(&header);
        let mut writer = chain.writer(area);
        match header.request_type {
            blk::request_type::IN => {
                let sectors = (chain.writable_len() - 1) / SECTOR as u64;
                for s in header.sector..header.sector + sectors {
                    writer.write(&self.sector(s)).unwrap();
                }
                let failed = self
                    .bad
                    .is_some_and(|b| (header.sector..header.sector + sectors).contains(&b));
                let status = if failed {
                    blk::status::IOERR
                } else {
                    blk::status::OK
                };
                writer.write(&[status]).unwrap();
            }
            blk::request_type::OUT => {
                let sectors = (chain.readable_len() - 16) / SECTOR as u64;
                for s in header.sector..header.sector + sectors {
                    let mut data = vec![0u8; SECTOR];
                    reader.read_exact(&mut data).unwrap();
                    self.cache.insert(s, data);
                }
                writer.write(&[blk::status::OK]).unwrap();
            }
            blk::request_type::FLUSH => {
                for (s, data) in std::mem::take(&mut self.cache) {
                    let at = s as usize * SECTOR;
                    self.durable[at..at + SECTOR].copy_from_slice(&data);
                }
                writer.write(&[blk::status::OK]).unwrap();
            }
            _ => writer.write(&[blk::status::UNSUPP]).unwrap(),
        }
        writer.written()
    }

    /// What a read of sector `s` returns now.
    fn sector(&self, s: u64) -> Vec<u8> {
        self.cache.get(&s).cloned().unwrap_or_else(|| {
            let at = s as usize * SECTOR;
            self.durable[at..at + SECTOR].to_vec()
        })
    }

    /// Power loss: the volatile cache is gone.
    fn crash(&mut self) {
        self.cache.clear();
    }

    fn durable(&self, s: u64) -> &[u8] {
        let at = s as usize * SECTOR;
        &self.durable[at..at + SECTOR]
    }
}

type Backend0<'a> = VirtioBackend<'a, SharedMemoryTransport<'a, SimNotifier<'a>>, 256>;
type Srv<'a> = Server<'a, Backend0<'a>, SimNotifier<'a>>;

struct World<'a> {
    disk_memory: &'a OwnedDma,
    disk: Rc<RefCell<SimDisk<'a>>>,
    server: Rc<RefCell<Srv<'a>>>,
    /// Runs disk and server until quiet: what a client's wait does.
    pump: Pump<'a>,
    slot_len: usize,
    /// The backend's share of the disk's data area (the rest holds zero-copy client regions).
    backend_len: Option<usize>,
}

/// Tables for a server (each lives as long as the test).
fn tables() -> &'static mut Tables {
    Box::leak(Box::new(Tables::new()))
}

fn disk_pump<'a>(disk: &Rc<RefCell<SimDisk<'a>>>) -> Pump<'a> {
    let disk = disk.clone();
    Rc::new(RefCell::new(Some(Box::new(move || {
        disk.borrow_mut().step();
    }) as Box<dyn FnMut() + 'a>)))
}

fn backend<'a>(
    memory: &'a OwnedDma,
    disk: &Rc<RefCell<SimDisk<'a>>>,
    slot_len: usize,
    backend_len: Option<usize>,
) -> Backend0<'a> {
    let (to_disk, _) = pair(disk_pump(disk), no_pump());
    // The disk's own notifier was made with the disk; reuse its doorbells.
    let disk_side = disk.borrow_mut().device.notifier().clone();
    let notifier = SimNotifier {
        inbox: disk_side.outbox.clone(),
        outbox: disk_side.inbox.clone(),
        pump: to_disk.pump,
    };
    let transport = SharedMemoryTransport::new(memory.region(0), notifier).unwrap();
    let ring = transport.ring_area();
    let mut data = transport.data_area();
    if let Some(len) = backend_len {
        data = data.subregion(0, len).unwrap();
    }
    VirtioBackend::new(transport, ring, data, slot_len, |_| Ok(())).unwrap()
}

impl<'a> World<'a> {
    fn new(disk_memory: &'a OwnedDma, slot_len: usize) -> Self {
        Self::with_backend_len(disk_memory, slot_len, None)
    }

    /// A world whose backend uses only the first `backend_len` bytes of the disk's data area:
    /// the rest is memory the simulated device reaches, for client regions ([`World::dma_region`]).
    fn with_backend_len(
        disk_memory: &'a OwnedDma,
        slot_len: usize,
        backend_len: Option<usize>,
    ) -> Self {
        let (disk_notifier, _) = pair(no_pump(), no_pump());
        let mut capacity = [0u8; 8];
        capacity.copy_from_slice(&DISK_SECTORS.to_le_bytes());
        let description = DeviceDescription {
            device_type: id::BLOCK,
            features: Features::from_bits(&[blk::features::FLUSH]),
            num_queues: 1,
            max_queue_size: 256,
            config: &capacity,
        };
        let device =
            SharedMemoryDevice::new(disk_memory.region(0), RING_LEN, &description, disk_notifier)
                .unwrap();
        let disk = Rc::new(RefCell::new(SimDisk {
            device,
            queue: None,
            durable: vec![0; DISK_SECTORS as usize * SECTOR],
            cache: BTreeMap::new(),
            hold: false,
            bad: None,
            held: Vec::new(),
            log: Vec::new(),
        }));
        let server = Rc::new(RefCell::new(Server::new(Block::new(
            backend(disk_memory, &disk, slot_len, backend_len),
            tables(),
            "disk0",
            64,
        ))));
        let pump: Pump<'a> = no_pump();
        {
            let (server, disk) = (server.clone(), disk.clone());
            *pump.borrow_mut() = Some(Box::new(move || {
                for _ in 0..1000 {
                    let a = disk.borrow_mut().step();
                    let b = server.borrow_mut().run_once(0).busy;
                    if !a && !b {
                        break;
                    }
                }
            }));
        }
        Self {
            disk_memory,
            disk,
            server,
            pump,
            slot_len,
            backend_len,
        }
    }

    /// Client region `k` in device-reachable memory after the backend's share, and the bus
    /// address the device knows its byte 0 by (as a DMA owner learns it from the kernel).
    fn dma_region(&self, k: usize) -> (DmaRegion<'a>, u64) {
        let bus = self.backend_len.unwrap() + k * REGION_LEN;
        let offset = self.disk.borrow().device.data_offset() + bus;
        let region = self
            .disk_memory
            .region(0)
            .subregion(offset, REGION_LEN)
            .unwrap();
        (region.rebased(0), bus as u64)
    }

    /// Adds a client channel exporting `disk`; returns the client-side notifier.
    fn add(&self, region: DmaRegion<'a>, disk: DiskSpec, name: &str) -> (usize, SimNotifier<'a>) {
        let (server_side, client_side) = pair(no_pump(), self.pump.clone());
        let index = self
            .server
            .borrow_mut()
            .add_client(
                region,
                RING_LEN,
                &BlockSpec::new(disk, name.as_bytes()),
                0,
                server_side,
            )
            .unwrap();
        (index, client_side)
    }

    fn attach(
        &self,
        region: DmaRegion<'a>,
        notifier: SimNotifier<'a>,
        depth: usize,
    ) -> BlkClient<'a, SimNotifier<'a>> {
        BlkClient::attach(
            region,
            notifier,
            Options {
                depth,
                max_waits: 20,
            },
        )
        .unwrap()
    }

    fn run(&self) {
        if let Some(run) = self.pump.borrow_mut().as_mut() {
            run();
        }
    }

    /// The server partition restarts: a fresh server drives the disk again and lays out every
    /// client channel afresh.
    fn restart_server(&self, clients: &[(DmaRegion<'a>, DiskSpec, SimNotifier<'a>)]) {
        let backend = backend(
            self.disk_memory,
            &self.disk,
            self.slot_len,
            self.backend_len,
        );
        let mut server = Server::new(Block::new(backend, tables(), "disk0", 64));
        for (region, disk, notifier) in clients {
            let spec = BlockSpec::new(*disk, b"again");
            server
                .add_client(*region, RING_LEN, &spec, 0, notifier.clone())
                .unwrap();
        }
        *self.server.borrow_mut() = server;
    }

    fn requests_logged(&self) -> usize {
        self.disk.borrow().log.len()
    }
}

fn pattern(seed: u64, sectors: usize) -> Vec<u8> {
    (0..sectors * SECTOR)
        .map(|i| (seed.wrapping_mul(31).wrapping_add(i as u64 * 7) >> 1) as u8)
        .collect()
}

fn rw(start: u64, count: u64) -> DiskSpec {
    DiskSpec {
        lba_start: start,
        lba_count: count,
        read_only: false,
    }
}

fn ro(start: u64, count: u64) -> DiskSpec {
    DiskSpec {
        read_only: true,
        ..rw(start, count)
    }
}

#[test]
fn write_read_flush_through_the_whole_path() {
    let disk_memory = OwnedDma::new(REGION_LEN);
    let memory = OwnedDma::new(REGION_LEN);
    let world = World::new(&disk_memory, 4096);
    let (index, notifier) = world.add(memory.region(0), rw(100, 1000), "storage-disk");
    let mut client = world.attach(memory.region(0), notifier, 4);
    assert_eq!(client.capacity(), 1000);
    assert!(!client.read_only());
    assert!(client.has_flush());
    assert_eq!(
        world.server.borrow().client_state(index),
        Some(ClientState::Serving)
    );
    assert_eq!(&client.get_id().unwrap()[..12], b"storage-disk");

    let data = pattern(1, 8);
    client.write(0, &data).unwrap();
    let mut back = vec![0u8; data.len()];
    client.read(0, &mut back).unwrap();
    assert_eq!(back, data);
    // Virtual sector 0 is real sector 100: in the cache, not yet durable.
    assert_eq!(world.disk.borrow().sector(100), data[..SECTOR]);
    assert_ne!(world.disk.borrow().durable(100), &data[..SECTOR]);
    client.flush().unwrap();
    world.disk.borrow_mut().crash();
    for s in 0..8 {
        assert_eq!(
            world.disk.borrow().durable(100 + s),
            &data[s as usize * SECTOR..(s as usize + 1) * SECTOR]
        );
    }
    let log = world.disk.borrow().log.clone();
    assert!(log.contains(&(blk::request_type::OUT, 100, 8 * SECTOR as u64)));
    assert_eq!(log.last().map(|e| e.0), Some(blk::request_type::FLUSH));
    let stats = world.server.borrow().client_stats(index).unwrap();
    assert_eq!(stats.refused, 0);
    assert_eq!(stats.ok, 4);
}

#[test]
fn out_of_range_and_read_only_requests_never_reach_the_device() {
    let disk_memory = OwnedDma::new(REGION_LEN);
    let (mem_a, mem_b) = (OwnedDma::new(REGION_LEN), OwnedDma::new(REGION_LEN));
    let world = World::new(&disk_memory, 4096);
    let (a, na) = world.add(mem_a.region(0), rw(0, 1000), "a");
    let (b, nb) = world.add(mem_b.region(0), ro(1000, 100), "b");
    let mut client_a = world.attach(mem_a.region(0), na, 1);
    let mut client_b = world.attach(mem_b.region(0), nb, 1);
    assert!(client_b.read_only());
    assert_eq!(client_b.capacity(), 100);

    let before = world.requests_logged();
    let mut buf = vec![0u8; 2 * SECTOR];
    // A's disk ends at 1000: B's range starts there and is out of A's reach.
    assert_eq!(client_a.read(1000, &mut buf), Err(BlkError::Io));
    assert_eq!(client_a.read(999, &mut buf), Err(BlkError::Io));
    assert_eq!(client_a.write(1000, &buf), Err(BlkError::Io));
    assert_eq!(client_a.read(u64::MAX, &mut buf), Err(BlkError::Io));
    assert_eq!(
        client_a.read(u64::MAX - 1, &mut buf[..SECTOR * 2]),
        Err(BlkError::Io)
    );
    // B may not write, even inside its range; its flush has nothing to do.
    assert_eq!(client_b.write(0, &buf), Err(BlkError::Io));
    client_b.flush().unwrap();
    assert_eq!(
        world.requests_logged(),
        before,
        "refused requests reached the device"
    );

    // Allowed requests still work for both.
    client_a.read(998, &mut buf).unwrap();
    client_b.read(98, &mut buf).unwrap();
    assert_eq!(world.requests_logged(), before + 2);
    assert_eq!(
        world.disk.borrow().log[before + 1],
        (blk::request_type::IN, 1098, 1024)
    );
    assert_eq!(world.server.borrow().client_stats(a).unwrap().refused, 5);
    assert_eq!(world.server.borrow().client_stats(b).unwrap().refused, 1);
    assert_eq!(
        world.server.borrow().client_state(a),
        Some(ClientState::Serving)
    );
}

#[test]
fn misaligned_and_unsupported_requests_get_a_status() {
    let disk_memory = OwnedDma::new(REGION_LEN);
    let memory = OwnedDma::new(REGION_LEN);
    let world = World::new(&disk_memory, 4096);
    let (_, notifier) = world.add(memory.region(0), rw(0, 100), "a");
    let mut driver = raw_client(memory.region(0), notifier);
    let data = driver.data();
    // A read of 100 bytes: not a whole sector.
    let status = raw_request(
        &mut driver,
        blk::request_type::IN,
        0,
        &[Buffer { addr: 0, len: 16 }],
        &[
            Buffer {
                addr: 4096,
                len: 100,
            },
            Buffer { addr: 64, len: 1 },
        ],
    );
    assert_eq!(status, blk::status::IOERR);
    let status = raw_request(
        &mut driver,
        blk::request_type::DISCARD,
        0,
        &[Buffer { addr: 0, len: 16 }],
        &[Buffer { addr: 64, len: 1 }],
    );
    assert_eq!(status, blk::status::UNSUPP);
    assert_eq!(data.read_u8(64).unwrap(), blk::status::UNSUPP);
    assert!(world.disk.borrow().log.is_empty());
}

/// A client driving the ring by hand, to send what a correct driver never would (it
/// negotiates no features at all).
fn raw_client<'a>(region: DmaRegion<'a>, notifier: SimNotifier<'a>) -> Driver<'a> {
    Driver::attach::<Block<'a, Backend0<'a>>>(region, notifier, Features(0)).unwrap()
}

/// Writes a header at data offset 0, submits the chain, runs the world; returns the status
/// byte at data offset 64 (0xee if the request did not complete).
fn raw_request(
    driver: &mut Driver<'_>,
    request_type: u32,
    sector: u64,
    readable: &[Buffer],
    writable: &[Buffer],
) -> u8 {
    let data = driver.data();
    data.write_bytes(
        0,
        &blk::RequestHeader {
            request_type,
            sector,
        }
        .to_bytes(),
    )
    .unwrap();
    data.write_u8(64, 0xee).unwrap();
    driver.submit_chain(0, readable, writable).unwrap();
    driver.kick(0).unwrap();
    driver.wait();
    while driver.poll_used(0).is_some() {}
    data.read_u8(64).unwrap()
}

#[test]
fn malformed_chains_stop_only_that_client_until_it_resets() {
    let disk_memory = OwnedDma::new(REGION_LEN);
    let (mem_good, mem_bad) = (OwnedDma::new(REGION_LEN), OwnedDma::new(REGION_LEN));
    let world = World::new(&disk_memory, 4096);
    let (_, ng) = world.add(mem_good.region(0), rw(0, 1000), "good");
    let (bad, nb) = world.add(mem_bad.region(0), rw(1000, 1000), "bad");
    let mut good = world.attach(mem_good.region(0), ng, 2);
    let mut driver = raw_client(mem_bad.region(0), nb.clone());
    let data_len = driver.data().len() as u64;

    let cases: [(&str, Vec<Buffer>, Vec<Buffer>, Broken); 4] = [
        (
            "short header",
            vec![Buffer { addr: 0, len: 8 }],
            vec![Buffer { addr: 64, len: 1 }],
            Broken::Class(BlkRule::NoHeader),
        ),
        (
            "no status byte",
            vec![Buffer { addr: 0, len: 16 }],
            vec![],
            Broken::Class(BlkRule::NoStatus),
        ),
        (
            "buffer outside the data area",
            vec![Buffer { addr: 0, len: 16 }],
            vec![
                Buffer {
                    addr: data_len - 8,
                    len: 512,
                },
                Buffer { addr: 64, len: 1 },
            ],
            Broken::Queue(virtio::Error::BufferOutsideGrant),
        ),
        (
            "descriptor loop",
            vec![Buffer { addr: 0, len: 16 }],
            vec![Buffer { addr: 64, len: 1 }],
            Broken::Queue(virtio::Error::DescriptorLoop),
        ),
    ];
    let mut breaks = 0;
    for (what, readable, writable, why) in cases {
        let data = driver.data();
        data.write_bytes(
            0,
            &blk::RequestHeader {
                request_type: blk::request_type::IN,
                sector: 0,
            }
            .to_bytes(),
        )
        .unwrap();
        let token = driver.submit_chain(0, &readable, &writable).unwrap();
        if why == Broken::Queue(virtio::Error::DescriptorLoop) {
            // Make the head descriptor point at itself with NEXT set, behind the driver's back.
            let ring = driver.ring_area();
            let desc = usize::from(token.0) * 16;
            let flags = ring.read_u16(desc + 12).unwrap();
            ring.write_u16(desc + 12, flags | 1).unwrap();
            ring.write_u16(desc + 14, token.0).unwrap();
        }
        driver.kick(0).unwrap();
        world.run();
        breaks += 1;
        assert_eq!(
            world.server.borrow().client_state(bad),
            Some(ClientState::Broken(why)),
            "{what}"
        );
        assert_eq!(
            world.server.borrow().client_stats(bad).unwrap().breaks,
            breaks
        );
        assert_ne!(driver.status() & status::DEVICE_NEEDS_RESET, 0, "{what}");
        // Everything but a reset is ignored now; the other client is served all along.
        let mut buf = [0u8; SECTOR];
        good.write(breaks as u64, &[breaks as u8; SECTOR]).unwrap();
        good.read(breaks as u64, &mut buf).unwrap();
        assert_eq!(buf, [breaks as u8; SECTOR], "{what}");
        // The broken client resets and is served again.
        driver = raw_client(mem_bad.region(0), nb.clone());
        assert_eq!(
            world.server.borrow().client_state(bad),
            Some(ClientState::Serving),
            "{what}"
        );
        let status = raw_request(
            &mut driver,
            blk::request_type::IN,
            0,
            &[Buffer { addr: 0, len: 16 }],
            &[
                Buffer {
                    addr: 4096,
                    len: 512,
                },
                Buffer { addr: 64, len: 1 },
            ],
        );
        assert_eq!(status, blk::status::OK, "{what}");
    }
    // Nothing the broken client sent reached the device as a write.
    assert!(
        world
            .disk
            .borrow()
            .log
            .iter()
            .all(|&(t, s, _)| t != blk::request_type::OUT || s < 1000)
    );
}

#[test]
fn flush_completes_only_after_earlier_writes_and_the_device_flush() {
    let disk_memory = OwnedDma::new(REGION_LEN);
    let memory = OwnedDma::new(REGION_LEN);
    let world = World::new(&disk_memory, 4096);
    let (_, notifier) = world.add(memory.region(0), rw(0, 1000), "a");
    let mut client = world.attach(memory.region(0), notifier, 4);
    let data = pattern(7, 2);
    client.buffer(0).unwrap().write_bytes(0, &data).unwrap();
    world.disk.borrow_mut().hold = true;
    let before = world.requests_logged();
    client.submit(0, ClientOp::Write, 10, data.len()).unwrap();
    client.submit(1, ClientOp::Flush, 0, 0).unwrap();
    world.run();
    // The write reached the device; the flush waits for it to complete.
    assert_eq!(
        world.disk.borrow().log[before..],
        [(blk::request_type::OUT, 10, 1024)]
    );
    assert_eq!(client.poll().unwrap(), None);
    // The device completes the write; now the flush goes out, and is held in turn.
    world.disk.borrow_mut().hold = false;
    world.disk.borrow_mut().step();
    world.disk.borrow_mut().hold = true;
    world.run();
    assert_eq!(world.disk.borrow().log.len(), before + 2);
    assert_eq!(
        world.disk.borrow().log[before + 1].0,
        blk::request_type::FLUSH
    );
    assert_eq!(client.poll().unwrap(), Some((0, blk::status::OK)));
    assert_eq!(
        client.poll().unwrap(),
        None,
        "flush completed before the device's"
    );
    assert_ne!(world.disk.borrow().durable(10), &data[..SECTOR]);
    world.disk.borrow_mut().hold = false;
    world.run();
    assert_eq!(client.poll().unwrap(), Some((1, blk::status::OK)));
    world.disk.borrow_mut().crash();
    assert_eq!(world.disk.borrow().durable(10), &data[..SECTOR]);
    assert_eq!(world.disk.borrow().durable(11), &data[SECTOR..]);
}

#[test]
fn large_requests_are_split_and_many_are_in_flight() {
    let disk_memory = OwnedDma::new(REGION_LEN);
    let memory = OwnedDma::new(REGION_LEN);
    // Small bounce slots: a 32 KiB request takes eight of them.
    let world = World::new(&disk_memory, 4096);
    assert!(world.server.borrow_mut().class().backend().slots() >= 8);
    let (_, notifier) = world.add(memory.region(0), rw(500, 2000), "a");
    let mut client = world.attach(memory.region(0), notifier, 4);
    let data = pattern(3, 64);
    client.write(100, &data).unwrap();
    let mut back = vec![0u8; data.len()];
    client.read(100, &mut back).unwrap();
    assert_eq!(back, data);
    // Four requests at once, each on its own tag.
    for tag in 0..4 {
        let chunk = &data[tag * 4096..(tag + 1) * 4096];
        client.buffer(tag).unwrap().write_bytes(0, chunk).unwrap();
        client
            .submit(tag, ClientOp::Write, 1000 + tag as u64 * 8, 4096)
            .unwrap();
    }
    let mut done = 0;
    while done < 4 {
        let (_, status) = client.wait_any().unwrap();
        assert_eq!(status, blk::status::OK);
        done += 1;
    }
    for tag in 0..4 {
        client
            .submit(tag, ClientOp::Read, 1000 + tag as u64 * 8, 4096)
            .unwrap();
    }
    let mut seen = [false; 4];
    for _ in 0..4 {
        let (tag, status) = client.wait_any().unwrap();
        assert_eq!(status, blk::status::OK);
        let mut chunk = vec![0u8; 4096];
        client
            .buffer(tag)
            .unwrap()
            .read_bytes(0, &mut chunk)
            .unwrap();
        assert_eq!(chunk, data[tag * 4096..(tag + 1) * 4096]);
        seen[tag] = true;
    }
    assert_eq!(seen, [true; 4]);
    assert_eq!(world.server.borrow().class_ref().in_flight(), 0);
    assert_eq!(world.server.borrow().class_ref().queued(), 0);
}

#[test]
fn a_server_restart_is_reported_and_flushed_writes_survive_it() {
    let disk_memory = OwnedDma::new(REGION_LEN);
    let memory = OwnedDma::new(REGION_LEN);
    let world = World::new(&disk_memory, 4096);
    let spec = rw(200, 800);
    let (_, notifier) = world.add(memory.region(0), spec, "a");
    let server_side = {
        // The server's end of this channel, for the restarted server.
        let n = notifier.clone();
        SimNotifier {
            inbox: n.outbox.clone(),
            outbox: n.inbox.clone(),
            pump: no_pump(),
        }
    };
    let mut client = world.attach(memory.region(0), notifier, 2);
    let flushed = pattern(11, 4);
    client.write(0, &flushed).unwrap();
    client.flush().unwrap();
    // A write in flight when the server goes down: the device never completes it.
    let lost = pattern(12, 4);
    client.buffer(0).unwrap().write_bytes(0, &lost).unwrap();
    world.disk.borrow_mut().hold = true;
    client.submit(0, ClientOp::Write, 0, lost.len()).unwrap();
    world.run();
    world.restart_server(&[(memory.region(0), spec, server_side)]);
    world.disk.borrow_mut().hold = false;
    world.disk.borrow_mut().crash();
    // The client learns of the restart as a device reset, not a hang.
    assert_eq!(client.wait_any(), Err(BlkError::Reset));
    client.reconnect().unwrap();
    let mut back = vec![0u8; flushed.len()];
    client.read(0, &mut back).unwrap();
    assert_eq!(back, flushed, "a write acknowledged by a flush was lost");
    // The defined retry: write again, flush, verify.
    client.write(0, &lost).unwrap();
    client.flush().unwrap();
    client.read(0, &mut back).unwrap();
    assert_eq!(back, lost);
}

#[test]
fn a_client_reset_drops_its_requests_in_flight() {
    let disk_memory = OwnedDma::new(REGION_LEN);
    let memory = OwnedDma::new(REGION_LEN);
    let world = World::new(&disk_memory, 4096);
    let (index, notifier) = world.add(memory.region(0), rw(0, 100), "a");
    let mut client = world.attach(memory.region(0), notifier, 2);
    client.write(5, &[0x5a; SECTOR]).unwrap();
    world.disk.borrow_mut().hold = true;
    client.submit(0, ClientOp::Read, 5, SECTOR).unwrap();
    world.run();
    assert_eq!(world.server.borrow().class_ref().in_flight(), 1);
    // The client resets and sets up a fresh queue while the read is still on the device.
    client.reconnect().unwrap();
    client.buffer(0).unwrap().fill(0, SECTOR, 0).unwrap();
    world.disk.borrow_mut().hold = false;
    world.run();
    assert_eq!(world.server.borrow().class_ref().in_flight(), 0);
    assert_eq!(world.server.borrow().class_ref().queued(), 0);
    // The stale completion went nowhere: not into the new queue, not into the buffer.
    assert_eq!(client.poll().unwrap(), None);
    let mut buf = [0u8; SECTOR];
    client.buffer(0).unwrap().read_bytes(0, &mut buf).unwrap();
    assert_eq!(buf, [0; SECTOR]);
    assert_eq!(world.server.borrow().client_stats(index).unwrap().resets, 1);
    client.read(5, &mut buf).unwrap();
    assert_eq!(buf, [0x5a; SECTOR]);
}

#[test]
fn virtual_disks_come_from_the_configuration_text() {
    let channels = [
        Keys {
            channel: "storage-disk",
            pairs: &[
                ("disk", "disk0"),
                ("lba-start", "0"),
                ("lba-count", "65536"),
                ("access", "read-write"),
            ],
        },
        Keys {
            channel: "control-disk",
            pairs: &[
                ("disk", "disk0"),
                ("lba-start", "65536"),
                ("lba-count", "2048"),
                ("access", "read-only"),
            ],
        },
    ];
    let specs: Vec<_> = channels
        .iter()
        .map(|c| {
            DiskSpec::from_config(
                c.number("lba-start"),
                c.number("lba-count"),
                c.text("access"),
                1 << 20,
            )
        })
        .collect();
    assert_eq!(specs, [Ok(rw(0, 65536)), Ok(ro(65536, 2048))]);
}

#[test]
fn a_channel_for_another_disk_is_not_served_and_the_id_is_the_channels_name() {
    let disk_memory = OwnedDma::new(REGION_LEN);
    let world = World::new(&disk_memory, 4096);
    let spec = |channel: Keys<'_>| world.server.borrow().class_ref().spec(&channel);
    let range = [("lba-start", "0"), ("lba-count", "100")];
    let mine = [("disk", "disk0"), range[0], range[1]];
    assert_eq!(
        spec(Keys {
            channel: "mine",
            pairs: &mine
        }),
        Ok(BlockSpec::new(ro(0, 100), b"mine"))
    );
    let theirs = [("disk", "disk1"), range[0], range[1]];
    assert_eq!(
        spec(Keys {
            channel: "theirs",
            pairs: &theirs
        }),
        Err(SpecError::OtherDevice)
    );
    // No `disk`: the server's own; the range is checked against it.
    let beyond = [("lba-start", "4000"), ("lba-count", "200")];
    assert_eq!(
        spec(Keys {
            channel: "beyond",
            pairs: &beyond
        }),
        Err(SpecError::BeyondDisk {
            capacity: DISK_SECTORS
        })
    );
}

#[test]
fn writes_of_a_client_without_flush_are_made_stable_before_they_complete() {
    let disk_memory = OwnedDma::new(REGION_LEN);
    let memory = OwnedDma::new(REGION_LEN);
    let world = World::new(&disk_memory, 4096);
    let (_, notifier) = world.add(memory.region(0), rw(0, 100), "a");
    // This driver negotiates no features at all: not VIRTIO_BLK_F_FLUSH either.
    let mut driver = raw_client(memory.region(0), notifier);
    driver.data().fill(4096, SECTOR, 0x77).unwrap();
    let status = raw_request(
        &mut driver,
        blk::request_type::OUT,
        3,
        &[
            Buffer { addr: 0, len: 16 },
            Buffer {
                addr: 4096,
                len: 512,
            },
        ],
        &[Buffer { addr: 64, len: 1 }],
    );
    assert_eq!(status, blk::status::OK);
    let log = world.disk.borrow().log.clone();
    assert_eq!(
        log,
        [
            (blk::request_type::OUT, 3, 512),
            (blk::request_type::FLUSH, 0, 0)
        ]
    );
    world.disk.borrow_mut().crash();
    assert_eq!(world.disk.borrow().durable(3), &[0x77; SECTOR]);
}

/// Disk memory for the zero-copy worlds: control block and rings, 128 KiB for the backend,
/// then two client regions.
const ZC_DISK_LEN: usize = 0x10_0000;
const ZC_BACKEND_LEN: usize = 0x2_0000;

#[test]
fn zero_copy_requests_go_to_the_device_on_the_clients_buffers() {
    let disk_memory = OwnedDma::new(ZC_DISK_LEN);
    // A second client without zero copy (its region is not the server's to give the device).
    let memory_b = OwnedDma::new(REGION_LEN);
    let world = World::with_backend_len(&disk_memory, 4096, Some(ZC_BACKEND_LEN));
    let (region_a, bus_a) = world.dma_region(0);
    let (a, na) = world.add(region_a, rw(0, 1000), "a");
    assert!(world.server.borrow_mut().set_dma_base(a, bus_a));
    let (b, nb) = world.add(memory_b.region(0), rw(1000, 1000), "b");
    let mut client_a = world.attach(region_a, na, 4);
    let mut client_b = world.attach(memory_b.region(0), nb, 4);

    // 32 KiB: eight 4 KiB bounce slots for B, one device request on A's buffer for A.
    let data = pattern(21, 64);
    let before = world.requests_logged();
    client_a.write(10, &data).unwrap();
    assert_eq!(
        world.disk.borrow().log[before..],
        [(blk::request_type::OUT, 10, 32768)]
    );
    let mut back = vec![0u8; data.len()];
    client_a.read(10, &mut back).unwrap();
    assert_eq!(back, data);
    assert_eq!(
        world.disk.borrow().log[before + 1..],
        [(blk::request_type::IN, 10, 32768)]
    );
    client_a.flush().unwrap();
    world.disk.borrow_mut().crash();
    assert_eq!(world.disk.borrow().durable(10), &data[..SECTOR]);

    let before = world.requests_logged();
    client_b.write(10, &data).unwrap();
    assert_eq!(
        world.requests_logged(),
        before + 8,
        "B goes through bounce slots"
    );
    client_b.read(10, &mut back).unwrap();
    assert_eq!(back, data);
    assert_eq!(world.disk.borrow().sector(1010), data[..SECTOR]);

    // The same checks as with bounce slots: nothing outside A's disk reaches the device.
    let before = world.requests_logged();
    let mut buf = vec![0u8; 2 * SECTOR];
    assert_eq!(client_a.read(999, &mut buf), Err(BlkError::Io));
    assert_eq!(client_a.write(1000, &buf), Err(BlkError::Io));
    assert_eq!(world.requests_logged(), before);
    assert_eq!(world.server.borrow().client_stats(a).unwrap().refused, 2);
    assert_eq!(world.server.borrow().client_stats(b).unwrap().refused, 0);
    assert_eq!(world.server.borrow().class_ref().in_flight(), 0);
}

#[test]
fn zero_copy_scatters_over_the_chains_segments_and_keeps_the_status_private() {
    let disk_memory = OwnedDma::new(ZC_DISK_LEN);
    let world = World::with_backend_len(&disk_memory, 4096, Some(ZC_BACKEND_LEN));
    let (region, bus) = world.dma_region(0);
    let (index, notifier) = world.add(region, rw(0, 100), "a");
    assert!(world.server.borrow_mut().set_dma_base(index, bus));
    let data = pattern(5, 3);
    world
        .disk
        .borrow_mut()
        .cache
        .insert(7, data[..SECTOR].to_vec());
    world
        .disk
        .borrow_mut()
        .cache
        .insert(8, data[SECTOR..2 * SECTOR].to_vec());
    world
        .disk
        .borrow_mut()
        .cache
        .insert(9, data[2 * SECTOR..].to_vec());
    let mut driver = raw_client(region, notifier);
    let area = driver.data();
    // Three sectors read into two scattered pieces: 512 bytes at 4096, then 1025 bytes at
    // 8192 whose last byte is the status (data and status share a descriptor).
    let header = Buffer { addr: 0, len: 16 };
    let first = Buffer {
        addr: 4096,
        len: SECTOR as u32,
    };
    let second = Buffer {
        addr: 8192,
        len: 2 * SECTOR as u32 + 1,
    };
    area.fill(4096, 8192, 0x11).unwrap();
    let before = world.requests_logged();
    let mut transport_status = 0;
    {
        let data_area = driver.data();
        data_area
            .write_bytes(
                0,
                &blk::RequestHeader {
                    request_type: blk::request_type::IN,
                    sector: 7,
                }
                .to_bytes(),
            )
            .unwrap();
        driver.submit_chain(0, &[header], &[first, second]).unwrap();
        driver.kick(0).unwrap();
        driver.wait();
        while let Some(used) = driver.poll_used(0) {
            assert_eq!(used.written, 3 * SECTOR as u32 + 1);
            transport_status = data_area.read_u8(8192 + 2 * SECTOR).unwrap();
        }
    }
    assert_eq!(transport_status, blk::status::OK);
    assert_eq!(
        world.disk.borrow().log[before..],
        [(blk::request_type::IN, 7, 3 * SECTOR as u64)],
        "one device request on the client's two pieces"
    );
    let mut back = vec![0u8; 3 * SECTOR];
    area.read_bytes(4096, &mut back[..SECTOR]).unwrap();
    area.read_bytes(8192, &mut back[SECTOR..]).unwrap();
    assert_eq!(back, data);
    // Nothing written around the pieces.
    assert_eq!(area.read_u8(4096 + SECTOR).unwrap(), 0x11);
    assert_eq!(area.read_u8(8192 + 2 * SECTOR + 1).unwrap(), 0x11);
}

#[test]
fn a_zero_copy_client_reset_is_answered_only_after_the_device_let_go_of_its_buffers() {
    let disk_memory = OwnedDma::new(ZC_DISK_LEN);
    let world = World::with_backend_len(&disk_memory, 4096, Some(ZC_BACKEND_LEN));
    let (region, bus) = world.dma_region(0);
    let (index, notifier) = world.add(region, rw(0, 100), "a");
    assert!(world.server.borrow_mut().set_dma_base(index, bus));
    let mut client = world.attach(region, notifier, 2);
    client.write(5, &[0x5a; SECTOR]).unwrap();
    world.disk.borrow_mut().hold = true;
    client.submit(0, ClientOp::Read, 5, SECTOR).unwrap();
    world.run();
    assert_eq!(world.server.borrow().class_ref().in_flight(), 1);
    // The device still has a read into the client's buffer: the reset is not answered (here
    // the device holds the read for good, so the client gives up waiting).
    assert_eq!(client.reconnect().unwrap_err(), BlkError::Timeout);
    assert_eq!(world.server.borrow().client_stats(index).unwrap().resets, 0);
    world.disk.borrow_mut().hold = false;
    world.run();
    assert_eq!(world.server.borrow().class_ref().in_flight(), 0);
    // Once reset, nothing more lands in the client's memory.
    client.reconnect().unwrap();
    assert_eq!(world.server.borrow().client_stats(index).unwrap().resets, 1);
    client.buffer(0).unwrap().fill(0, SECTOR, 0).unwrap();
    world.run();
    assert_eq!(client.poll().unwrap(), None);
    let mut buf = [0u8; SECTOR];
    client.buffer(0).unwrap().read_bytes(0, &mut buf).unwrap();
    assert_eq!(buf, [0; SECTOR]);
    client.read(5, &mut buf).unwrap();
    assert_eq!(buf, [0x5a; SECTOR]);
}

#[test]
fn a_polling_backend_takes_no_interrupts_and_rechecks_before_sleeping() {
    let disk_memory = OwnedDma::new(REGION_LEN);
    let world = World::new(&disk_memory, 4096);
    let interrupted = || {
        world
            .disk
            .borrow_mut()
            .device
            .notifier()
            .outbox
            .pending
            .replace(false)
    };
    let mut server = world.server.borrow_mut();
    let backend = server.class().backend();
    // Interrupts asked for: a completion rings the doorbell.
    assert!(!backend.request_interrupt());
    backend.submit(0, Op::Read, 10, 4096).unwrap();
    backend.kick();
    world.disk.borrow_mut().step();
    assert!(interrupted());
    assert_eq!(backend.poll(), Some((0, true)));
    // Polling: completions arrive without one.
    backend.suppress_interrupts();
    backend.submit(1, Op::Read, 20, 4096).unwrap();
    backend.kick();
    world.disk.borrow_mut().step();
    assert!(!interrupted());
    // Asking again before sleeping finds the completion already there: poll, do not sleep.
    assert!(backend.request_interrupt());
    assert_eq!(backend.poll(), Some((1, true)));
    assert!(!backend.request_interrupt());
}

#[test]
fn a_device_that_breaks_its_used_ring_is_not_polled_forever() {
    let disk_memory = OwnedDma::new(REGION_LEN);
    let world = World::new(&disk_memory, 4096);
    let mut server = world.server.borrow_mut();
    let backend = server.class().backend();
    backend.suppress_interrupts();
    // The device returns a chain that was never made available: a used id not in flight.
    world
        .disk
        .borrow_mut()
        .queue
        .as_mut()
        .unwrap()
        .push(&virtio::queue::Chain::empty(), 0)
        .unwrap();
    assert_eq!(backend.poll(), None);
    // The server would otherwise poll again instead of sleeping, for ever.
    assert!(!backend.request_interrupt());
    assert_eq!(backend.poll(), None);
    assert!(backend.submit(0, Op::Read, 0, 4096).is_err());
}

#[test]
fn a_request_the_device_fails_completes_with_an_error_and_the_rest_go_on() {
    let disk_memory = OwnedDma::new(REGION_LEN);
    let memory = OwnedDma::new(REGION_LEN);
    // Small bounce slots: a 16 KiB read is four device requests.
    let world = World::new(&disk_memory, 4096);
    world.disk.borrow_mut().bad = Some(520);
    let (index, notifier) = world.add(memory.region(0), rw(500, 2000), "a");
    let mut client = world.attach(memory.region(0), notifier, 4);
    let mut buf = vec![0u8; 4096];
    // Virtual sector 20 is the bad real sector 520.
    assert_eq!(client.read(16, &mut buf), Err(BlkError::Io));
    client.read(40, &mut buf).unwrap();
    // One part of four fails: the whole request does, once every part is back.
    let mut big = vec![0u8; 16384];
    assert_eq!(client.read(8, &mut big), Err(BlkError::Io));
    client.read(100, &mut big).unwrap();
    let server = world.server.borrow();
    assert_eq!(server.class_ref().in_flight(), 0);
    assert_eq!(server.class_ref().queued(), 0);
    let stats = server.client_stats(index).unwrap();
    assert_eq!((stats.ok, stats.io_errors, stats.refused), (2, 2, 0));
    assert_eq!(server.client_state(index), Some(ClientState::Serving));
}

/// The framework's conformance suite on the block class: client k has sectors
/// 1024 k..1024 (k + 1) of the disk; a request is a one-sector read.
struct Conformance<'a> {
    devices: &'a [OwnedDma; 2],
    world: World<'a>,
}

impl<'a> ioserver::conformance::Harness<'a> for Conformance<'a> {
    type Class = Block<'a, Backend0<'a>>;

    fn server(&self) -> Ref<'_, Srv<'a>> {
        self.world.server.borrow()
    }
    fn add_client(&mut self, k: usize, region: DmaRegion<'a>) -> (usize, SimNotifier<'a>) {
        let k = k as u64;
        self.world.add(region, rw(k * 1024, 1024), "conformance")
    }
    fn run(&mut self) {
        self.world.run();
    }
    fn request(&mut self, _: usize, data: &DmaRegion<'a>, at: usize) -> Request {
        let header = blk::RequestHeader {
            request_type: blk::request_type::IN,
            sector: (at / 0x1000) as u64,
        };
        data.write_bytes(at, &header.to_bytes()).unwrap();
        let at = at as u64;
        let data_at = at + blk::RequestHeader::SIZE as u64;
        Request {
            queue: 0,
            readable: vec![Buffer {
                addr: at,
                len: blk::RequestHeader::SIZE as u32,
            }],
            writable: vec![
                Buffer {
                    addr: data_at,
                    len: SECTOR as u32,
                },
                Buffer {
                    addr: data_at + SECTOR as u64,
                    len: 1,
                },
            ],
        }
    }
    fn restart(&mut self) {
        self.world = World::new(&self.devices[1], 4096);
    }
}

#[test]
fn the_block_class_passes_the_conformance_suite() {
    ioserver::sim::conformance(REGION_LEN, |devices| Conformance {
        devices,
        world: World::new(&devices[0], 4096),
    })
    .unwrap();
}
