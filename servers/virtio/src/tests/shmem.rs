//! The inter-partition transport: the same driver code against a shared region and simulated
//! notifications, served by the device side.

use std::cell::RefCell;
use std::rc::Rc;

use super::model::{BlockModel, FORMATS, Format};
use crate::Error;
use crate::devices::{blk, id};
use crate::dma::{DmaRegion, OwnedDma};
use crate::features::{Features, bits, status};
use crate::packed::PackedQueue;
use crate::queue::{Buffer, DeviceQueue, DriverQueue};
use crate::split::SplitQueue;
use crate::transport::shmem::sim::{Doorbell, Pump, SimNotifier};
use crate::transport::shmem::{
    ChannelEvents, DeviceDescription, Notifier, SharedMemoryDevice, SharedMemoryTransport, layout,
};
use crate::transport::{Transport, initialize, read_config, reset};

const REGION_LEN: usize = 0x4_0000;
const RING_LEN: usize = 0x1_0000;

type Server<'a> = Rc<RefCell<SharedMemoryDevice<'a, SimNotifier<'a>>>>;

struct Channel<'a> {
    server: Server<'a>,
    client: SharedMemoryTransport<'a, SimNotifier<'a>>,
    events: Rc<RefCell<Vec<ChannelEvents>>>,
    to_server: Rc<Doorbell>,
    to_client: Rc<Doorbell>,
}

fn offered(format: Format) -> Features {
    let base = Features::from_bits(&[bits::EVENT_IDX, bits::INDIRECT_DESC, blk::features::FLUSH]);
    if format == Format::Packed {
        base.with(bits::RING_PACKED)
    } else {
        base
    }
}

fn channel(memory: &OwnedDma, format: Format) -> Channel<'_> {
    let region = memory.region(0);
    let to_server = Rc::new(Doorbell::default());
    let to_client = Rc::new(Doorbell::default());
    let server_pump: Pump<'_> = Rc::new(RefCell::new(None));
    let client_pump: Pump<'_> = Rc::new(RefCell::new(None));
    let mut config = [0u8; 8];
    config.copy_from_slice(&128u64.to_le_bytes());
    let description = DeviceDescription {
        device_type: id::BLOCK,
        features: offered(format),
        num_queues: 1,
        max_queue_size: 16,
        config: &config,
    };
    let server_notifier = SimNotifier {
        inbox: to_server.clone(),
        outbox: to_client.clone(),
        pump: server_pump,
    };
    let server = Rc::new(RefCell::new(
        SharedMemoryDevice::new(region, RING_LEN, &description, server_notifier).unwrap(),
    ));
    let events = Rc::new(RefCell::new(Vec::new()));
    {
        let server = server.clone();
        let events = events.clone();
        *client_pump.borrow_mut() = Some(Box::new(move || {
            let mut server = server.borrow_mut();
            if server.notifier().take_pending() {
                let happened = server.process_requests().unwrap();
                events.borrow_mut().push(happened);
            }
        }));
    }
    let client_notifier = SimNotifier {
        inbox: to_client.clone(),
        outbox: to_server.clone(),
        pump: client_pump,
    };
    let client = SharedMemoryTransport::new(region, client_notifier).unwrap();
    Channel {
        server,
        client,
        events,
        to_server,
        to_client,
    }
}

fn driver_queue<'a>(
    ring: DmaRegion<'a>,
    format: Format,
    features: Features,
) -> Box<dyn DriverQueue + 'a> {
    match format {
        Format::Split => Box::new(SplitQueue::<16>::new(ring, features, false).unwrap()),
        Format::Packed => Box::new(PackedQueue::<16>::new(ring, features).unwrap()),
    }
}

fn device_queue<'a>(server: &Server<'a>, format: Format) -> Box<dyn DeviceQueue + 'a> {
    let server = server.borrow();
    match format {
        Format::Split => Box::new(server.split_queue(0).unwrap()),
        Format::Packed => Box::new(server.packed_queue(0).unwrap()),
    }
}

/// Runs the full initialisation over the channel; returns the driver queue.
fn bring_up<'a>(
    channel: &mut Channel<'a>,
    format: Format,
) -> (Features, Box<dyn DriverQueue + 'a>) {
    let ring = channel.client.ring_area();
    let mut queue = None;
    let negotiated = initialize(
        &mut channel.client,
        offered(format),
        |transport, features| {
            let driver = driver_queue(ring, format, features);
            transport.enable_queue(0, driver.size(), driver.addresses())?;
            queue = Some(driver);
            Ok(())
        },
    )
    .unwrap();
    (negotiated, queue.unwrap())
}

#[test]
fn block_over_shared_memory() {
    for format in FORMATS {
        let memory = OwnedDma::new(REGION_LEN);
        let mut channel = channel(&memory, format);
        let (negotiated, mut driver) = bring_up(&mut channel, format);
        assert_eq!(negotiated, offered(format).with(bits::VERSION_1));
        let events = channel.events.borrow().clone();
        assert!(
            events.iter().any(|e| e.features_accepted),
            "{format:?}: {events:?}"
        );
        assert!(events.iter().any(|e| e.queues_enabled == 1));
        assert!(events.iter().any(|e| e.driver_ok));
        assert_eq!(
            channel.server.borrow().status() & status::DRIVER_OK,
            status::DRIVER_OK
        );
        assert_eq!(channel.server.borrow().negotiated(), negotiated);

        let mut capacity = [0u8; 8];
        read_config(&mut channel.client, blk::config::CAPACITY, &mut capacity).unwrap();
        assert_eq!(u64::from_le_bytes(capacity), 128);

        // Buffers are data-area offsets; the data area is the client's view too.
        let data = channel.client.data_area();
        let header = blk::RequestHeader {
            request_type: blk::request_type::OUT,
            sector: 2,
        };
        data.write_bytes(0, &header.to_bytes()).unwrap();
        data.write_bytes(4096, b"partition to partition").unwrap();
        driver
            .submit(
                &[
                    Buffer { addr: 0, len: 16 },
                    Buffer {
                        addr: 4096,
                        len: 22,
                    },
                ],
                &[Buffer { addr: 16, len: 1 }],
            )
            .unwrap();
        if driver.should_notify().unwrap() {
            channel.client.notify(0).unwrap();
        }
        assert_eq!(channel.server.borrow_mut().take_kicks().unwrap(), 1);

        let mut device = device_queue(&channel.server, format);
        let area = channel.server.borrow().data_area();
        let mut disk = BlockModel::new(16);
        assert_eq!(disk.serve(&mut *device, &area).unwrap(), 1);
        assert_eq!(&disk.disk[1024..1046], b"partition to partition");
        if device.should_interrupt().unwrap() {
            channel.server.borrow_mut().interrupt(0).unwrap();
        }
        assert!(channel.to_client.pending.get());
        assert!(channel.client.ack_interrupt().queue);
        let done = driver.poll_used().unwrap().unwrap();
        assert_eq!(done.written, 1);
        assert_eq!(data.read_u8(16).unwrap(), blk::status::OK);
    }
}

#[test]
fn client_cannot_name_memory_outside_its_data_area() {
    let memory = OwnedDma::new(REGION_LEN);
    let mut channel = channel(&memory, Format::Split);
    let (_, mut driver) = bring_up(&mut channel, Format::Split);
    let data_len = channel.client.data_area().len() as u64;
    let mut device = device_queue(&channel.server, Format::Split);
    // Just past the end, straddling the end, and a huge address that would wrap.
    for buffer in [
        Buffer {
            addr: data_len,
            len: 1,
        },
        Buffer {
            addr: data_len - 4,
            len: 8,
        },
        Buffer {
            addr: u64::MAX - 1,
            len: 4,
        },
    ] {
        driver.submit(&[], &[buffer]).unwrap();
        assert_eq!(
            device.pop().map(|c| c.is_some()),
            Err(Error::BufferOutsideGrant),
            "{buffer:?}"
        );
        // The server treats the queue as broken; a reset recovers it.
        reset(&mut channel.client).unwrap();
        let (_, fresh) = bring_up(&mut channel, Format::Split);
        driver = fresh;
        device = device_queue(&channel.server, Format::Split);
    }
}

#[test]
fn features_not_offered_are_refused() {
    let memory = OwnedDma::new(REGION_LEN);
    let mut channel = channel(&memory, Format::Split);
    let client = &mut channel.client;
    reset(client).unwrap();
    client.set_status(status::ACKNOWLEDGE | status::DRIVER);
    client.set_driver_features(offered(Format::Split).with(bits::VERSION_1).with(50));
    client.set_status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
    assert_eq!(
        client.status() & status::FEATURES_OK,
        0,
        "the server did not keep FEATURES_OK"
    );
    assert!(channel.events.borrow().iter().any(|e| e.features_rejected));
    // Without VERSION_1 too: this transport has no legacy mode.
    client.set_driver_features(Features::from_bits(&[bits::EVENT_IDX]));
    client.set_status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
    assert_eq!(client.status() & status::FEATURES_OK, 0);
}

#[test]
fn reset_drops_queues_and_allows_renegotiation() {
    let memory = OwnedDma::new(REGION_LEN);
    let mut channel = channel(&memory, Format::Split);
    bring_up(&mut channel, Format::Split);
    assert!(channel.server.borrow().split_queue(0).is_ok());
    reset(&mut channel.client).unwrap();
    assert!(channel.events.borrow().iter().any(|e| e.reset));
    assert_eq!(
        channel.server.borrow().split_queue(0).err(),
        Some(Error::QueueUnavailable)
    );
    assert_eq!(channel.server.borrow().status(), 0);
    assert_eq!(channel.server.borrow().negotiated(), Features(0));
    let (_, _driver) = bring_up(&mut channel, Format::Split);
    assert!(channel.server.borrow().split_queue(0).is_ok());
    assert!(channel.to_server.rung.get() > 0 && channel.to_client.rung.get() > 0);
}

#[test]
fn bad_queue_descriptions_are_refused() {
    let memory = OwnedDma::new(REGION_LEN);
    let mut channel = channel(&memory, Format::Split);
    let client = &mut channel.client;
    let result = initialize(client, offered(Format::Split), |transport, features| {
        let ring = transport.ring_area();
        let queue = SplitQueue::<16>::new(ring, features, false)?;
        let mut addresses = queue.addresses();
        addresses.device = RING_LEN as u64 - 8; // used ring runs off the ring area
        transport.enable_queue(0, 16, addresses)
    });
    assert_eq!(result, Err(Error::QueueUnavailable));
    assert_ne!(client.status() & status::FAILED, 0);

    // The client overwrites the server's advertised limits; the server keeps its own.
    reset(client).unwrap();
    let region = memory.region(0);
    region
        .write_u16(layout::QUEUE_TABLE + layout::Q_MAX_SIZE, 1024)
        .unwrap();
    let result = initialize(client, offered(Format::Split), |transport, features| {
        let ring = transport.ring_area();
        let queue = SplitQueue::<1024>::new(ring, features, false)?;
        transport.enable_queue(0, 1024, queue.addresses())
    });
    assert_eq!(result, Err(Error::QueueUnavailable));
    assert_eq!(client.max_queue_size(1), Err(Error::QueueUnavailable));
}

#[test]
fn configuration_changes_bump_the_generation() {
    let memory = OwnedDma::new(REGION_LEN);
    let mut channel = channel(&memory, Format::Split);
    bring_up(&mut channel, Format::Split);
    let before = channel.client.config_generation();
    channel
        .server
        .borrow_mut()
        .update_config(0, &256u64.to_le_bytes())
        .unwrap();
    assert_ne!(channel.client.config_generation(), before);
    let interrupt = channel.client.ack_interrupt();
    assert!(interrupt.configuration && !interrupt.queue);
    let mut capacity = [0u8; 8];
    read_config(&mut channel.client, 0, &mut capacity).unwrap();
    assert_eq!(u64::from_le_bytes(capacity), 256);
    assert_eq!(
        channel.client.read_config_u8(8),
        Err(Error::ConfigOutOfRange)
    );
    assert_eq!(
        channel.server.borrow_mut().update_config(4, &[0; 8]),
        Err(Error::ConfigOutOfRange)
    );
}
