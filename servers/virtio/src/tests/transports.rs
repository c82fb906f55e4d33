//! The same driver code over every register transport: simulated PCI modern, PCI legacy,
//! MMIO v2 and MMIO v1 devices whose queues are served by the device-side rings.

use std::cell::RefCell;
use std::rc::Rc;

use super::model::*;
use crate::Error;
use crate::devices::{blk, id};
use crate::dma::DmaRegion;
use crate::features::{Features, bits, status};
use crate::packed::{PackedDeviceQueue, PackedLayout, PackedQueue};
use crate::queue::{DeviceQueue, DriverQueue, GrantedArea};
use crate::split::{SplitDeviceQueue, SplitLayout, SplitQueue};
use crate::transport::mmio::{self, MmioTransport};
use crate::transport::pci::{self, PciLegacyTransport, PciModernTransport, VirtioPciCapabilities};
use crate::transport::{RegisterAccess, Transport, initialize, read_config};

#[derive(Default, Clone, Copy)]
struct SimQueue {
    max: u16,
    size: u16,
    desc: u64,
    driver: u64,
    device: u64,
    enabled: bool,
    pfn: u32,
}

/// The state of a simulated device, shared by all of its register windows.
struct SimCore {
    features: u64,
    refuse: u64,
    driver_features: u64,
    status: u8,
    device_feature_select: u32,
    driver_feature_select: u32,
    queue_select: u16,
    queues: [SimQueue; 2],
    config: Vec<u8>,
    generation: u32,
    unstable_reads: u32,
    isr: u8,
    notifications: Vec<u16>,
    page_size: u32,
}

type Core = Rc<RefCell<SimCore>>;

fn core(features: u64, queue_max: u16) -> Core {
    let mut config = vec![0u8; 0x40];
    config[0..8].copy_from_slice(&64u64.to_le_bytes());
    let queue = SimQueue {
        max: queue_max,
        ..Default::default()
    };
    Rc::new(RefCell::new(SimCore {
        features,
        refuse: 0,
        driver_features: 0,
        status: 0,
        device_feature_select: 0,
        driver_feature_select: 0,
        queue_select: 0,
        queues: [queue; 2],
        config,
        generation: 0,
        unstable_reads: 0,
        isr: 0,
        notifications: Vec::new(),
        page_size: 0,
    }))
}

impl SimCore {
    fn set_status(&mut self, mut value: u8) {
        if value == 0 {
            self.status = 0;
            self.driver_features = 0;
            for queue in &mut self.queues {
                *queue = SimQueue {
                    max: queue.max,
                    ..Default::default()
                };
            }
            return;
        }
        // §2.2.2: a device refuses features it cannot support by not keeping FEATURES_OK.
        if value & status::FEATURES_OK != 0 && self.driver_features & self.refuse != 0 {
            value &= !status::FEATURES_OK;
        }
        self.status = value;
    }
    fn queue(&mut self) -> &mut SimQueue {
        let index = usize::from(self.queue_select).min(self.queues.len() - 1);
        &mut self.queues[index]
    }
    fn config_read(&mut self, offset: usize, size: usize) -> u32 {
        if self.unstable_reads > 0 {
            self.unstable_reads -= 1;
            self.generation += 1;
        }
        let mut bytes = [0u8; 4];
        for (i, byte) in bytes.iter_mut().take(size).enumerate() {
            *byte = self.config.get(offset + i).copied().unwrap_or(0);
        }
        u32::from_le_bytes(bytes)
    }
    fn features_word(&self, select: u32) -> u32 {
        if select == 0 {
            self.features as u32
        } else if select == 1 {
            (self.features >> 32) as u32
        } else {
            0
        }
    }
    fn set_driver_word(&mut self, select: u32, value: u32) {
        let shift = 32 * select;
        if select < 2 {
            self.driver_features =
                self.driver_features & !(0xffff_ffffu64 << shift) | (u64::from(value) << shift);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Window {
    PciConfig,
    Common,
    Notify,
    Isr,
    Device,
    LegacyIo,
    Mmio(u32),
}

struct SimRegisters {
    core: Core,
    window: Window,
    pci_config: Vec<u8>,
}

fn pci_config_space() -> Vec<u8> {
    let mut c = vec![0u8; 256];
    c[0..2].copy_from_slice(&pci::VENDOR_ID.to_le_bytes());
    c[2..4].copy_from_slice(&0x1042u16.to_le_bytes());
    c[6] = 0x10;
    c[0x34] = 0x40;
    let mut cap = |at: usize,
                   next: u8,
                   cfg_type: u8,
                   bar: u8,
                   offset: u32,
                   length: u32,
                   extra: Option<u32>| {
        c[at] = 0x09;
        c[at + 1] = next;
        c[at + 2] = if extra.is_some() { 20 } else { 16 };
        c[at + 3] = cfg_type;
        c[at + 4] = bar;
        c[at + 8..at + 12].copy_from_slice(&offset.to_le_bytes());
        c[at + 12..at + 16].copy_from_slice(&length.to_le_bytes());
        if let Some(value) = extra {
            c[at + 16..at + 20].copy_from_slice(&value.to_le_bytes());
        }
    };
    // A capability with a reserved BAR number comes first and must be skipped.
    cap(0x40, 0x50, pci::cap_type::COMMON, 7, 0, 0x40, None);
    cap(0x50, 0x60, pci::cap_type::COMMON, 4, 0, 0x40, None);
    cap(0x60, 0x78, pci::cap_type::NOTIFY, 4, 0x1000, 0x100, Some(4));
    cap(0x78, 0x88, pci::cap_type::ISR, 4, 0x2000, 4, None);
    cap(0x88, 0x98, pci::cap_type::DEVICE, 4, 0x3000, 0x40, None);
    c[0x98] = 0x11; // MSI-X: not ours
    c[0x99] = 0;
    c
}

impl SimRegisters {
    fn new(core: &Core, window: Window) -> Self {
        Self {
            core: core.clone(),
            window,
            pci_config: pci_config_space(),
        }
    }

    fn read(&mut self, offset: usize, size: usize) -> u32 {
        let mut core = self.core.borrow_mut();
        match self.window {
            Window::PciConfig => {
                let mut bytes = [0u8; 4];
                bytes[..size].copy_from_slice(&self.pci_config[offset..offset + size]);
                u32::from_le_bytes(bytes)
            }
            Window::Common => match offset {
                pci::common::DEVICE_FEATURE => core.features_word(core.device_feature_select),
                pci::common::NUM_QUEUES => core.queues.len() as u32,
                pci::common::DEVICE_STATUS => u32::from(core.status),
                pci::common::CONFIG_GENERATION => core.generation,
                pci::common::QUEUE_SIZE => u32::from(core.queue().max),
                pci::common::QUEUE_ENABLE => u32::from(core.queue().enabled),
                pci::common::QUEUE_NOTIFY_OFF => u32::from(core.queue_select),
                _ => 0,
            },
            Window::Isr => u32::from(std::mem::take(&mut core.isr)),
            Window::Device => core.config_read(offset, size),
            Window::Notify => 0,
            Window::LegacyIo => match offset {
                pci::legacy::DEVICE_FEATURES => core.features as u32,
                pci::legacy::QUEUE_ADDRESS => core.queue().pfn,
                pci::legacy::QUEUE_SIZE => u32::from(core.queue().max),
                pci::legacy::DEVICE_STATUS => u32::from(core.status),
                pci::legacy::ISR_STATUS => u32::from(std::mem::take(&mut core.isr)),
                o if o >= pci::legacy::CONFIG => core.config_read(o - pci::legacy::CONFIG, size),
                _ => 0,
            },
            Window::Mmio(version) => match offset {
                mmio::reg::MAGIC_VALUE => mmio::MAGIC,
                mmio::reg::VERSION => version,
                mmio::reg::DEVICE_ID => id::BLOCK,
                mmio::reg::DEVICE_FEATURES => core.features_word(core.device_feature_select),
                mmio::reg::QUEUE_NUM_MAX => u32::from(core.queue().max),
                mmio::reg::QUEUE_PFN => core.queue().pfn,
                mmio::reg::QUEUE_READY => u32::from(core.queue().enabled),
                mmio::reg::INTERRUPT_STATUS => u32::from(core.isr),
                mmio::reg::STATUS => u32::from(core.status),
                mmio::reg::CONFIG_GENERATION => core.generation,
                o if o >= mmio::reg::CONFIG => core.config_read(o - mmio::reg::CONFIG, size),
                _ => 0,
            },
        }
    }

    fn write(&mut self, offset: usize, value: u32) {
        let mut core = self.core.borrow_mut();
        let set_half = |target: &mut u64, high: bool, value: u32| {
            let shift = if high { 32 } else { 0 };
            *target = *target & !(0xffff_ffffu64 << shift) | (u64::from(value) << shift);
        };
        match self.window {
            Window::Common => match offset {
                pci::common::DEVICE_FEATURE_SELECT => core.device_feature_select = value,
                pci::common::DRIVER_FEATURE_SELECT => core.driver_feature_select = value,
                pci::common::DRIVER_FEATURE => {
                    let select = core.driver_feature_select;
                    core.set_driver_word(select, value)
                }
                pci::common::DEVICE_STATUS => core.set_status(value as u8),
                pci::common::QUEUE_SELECT => core.queue_select = value as u16,
                pci::common::QUEUE_SIZE => core.queue().size = value as u16,
                pci::common::QUEUE_ENABLE => core.queue().enabled = value == 1,
                o @ 0x20..=0x37 => {
                    let queue = core.queue();
                    let target = match o & !7 {
                        0x20 => &mut queue.desc,
                        0x28 => &mut queue.driver,
                        _ => &mut queue.device,
                    };
                    set_half(target, o % 8 == 4, value);
                }
                _ => {}
            },
            Window::Notify => {
                assert_eq!(
                    offset,
                    value as usize * 4,
                    "notify offset = queue_notify_off * multiplier"
                );
                core.notifications.push(value as u16);
            }
            Window::LegacyIo => match offset {
                pci::legacy::DRIVER_FEATURES => core.driver_features = u64::from(value),
                pci::legacy::QUEUE_ADDRESS => {
                    let queue = core.queue();
                    queue.pfn = value;
                    queue.size = queue.max;
                }
                pci::legacy::QUEUE_SELECT => core.queue_select = value as u16,
                pci::legacy::QUEUE_NOTIFY => core.notifications.push(value as u16),
                pci::legacy::DEVICE_STATUS => core.set_status(value as u8),
                _ => {}
            },
            Window::Mmio(_) => match offset {
                mmio::reg::DEVICE_FEATURES_SEL => core.device_feature_select = value,
                mmio::reg::DRIVER_FEATURES_SEL => core.driver_feature_select = value,
                mmio::reg::DRIVER_FEATURES => {
                    let select = core.driver_feature_select;
                    core.set_driver_word(select, value)
                }
                mmio::reg::GUEST_PAGE_SIZE => core.page_size = value,
                mmio::reg::QUEUE_SEL => core.queue_select = value as u16,
                mmio::reg::QUEUE_NUM => core.queue().size = value as u16,
                mmio::reg::QUEUE_PFN => core.queue().pfn = value,
                mmio::reg::QUEUE_READY => core.queue().enabled = value == 1,
                mmio::reg::QUEUE_NOTIFY => core.notifications.push(value as u16),
                mmio::reg::INTERRUPT_ACK => core.isr &= !(value as u8),
                mmio::reg::STATUS => core.set_status(value as u8),
                o @ 0x80..=0xa7 => {
                    let queue = core.queue();
                    let target = match o & !0xf {
                        0x80 => &mut queue.desc,
                        0x90 => &mut queue.driver,
                        _ => &mut queue.device,
                    };
                    set_half(target, o % 8 == 4, value);
                }
                _ => {}
            },
            Window::PciConfig | Window::Isr | Window::Device => {}
        }
    }
}

impl RegisterAccess for SimRegisters {
    fn read_u8(&mut self, offset: usize) -> u8 {
        self.read(offset, 1) as u8
    }
    fn read_u16(&mut self, offset: usize) -> u16 {
        self.read(offset, 2) as u16
    }
    fn read_u32(&mut self, offset: usize) -> u32 {
        self.read(offset, 4)
    }
    fn write_u8(&mut self, offset: usize, value: u8) {
        self.write(offset, u32::from(value))
    }
    fn write_u16(&mut self, offset: usize, value: u16) {
        self.write(offset, u32::from(value))
    }
    fn write_u32(&mut self, offset: usize, value: u32) {
        self.write(offset, value)
    }
}

fn pci_modern(core: &Core) -> PciModernTransport<SimRegisters> {
    let mut config = SimRegisters::new(core, Window::PciConfig);
    let caps = VirtioPciCapabilities::find(&mut config).unwrap();
    assert_eq!(
        caps.common.bar, 4,
        "the capability with a reserved BAR is skipped"
    );
    assert_eq!(caps.notify_off_multiplier, 4);
    // The device type comes from the PCI device ID (0x1042 - 0x1040).
    let device_type = pci::device_type(0x1042, 0).unwrap();
    PciModernTransport::new(device_type, &caps, |window| {
        let kind = match window.offset {
            0 => Window::Common,
            0x1000 => Window::Notify,
            0x2000 => Window::Isr,
            _ => Window::Device,
        };
        Ok(SimRegisters::new(core, kind))
    })
    .unwrap()
}

/// Where the simulated device finds the queue in guest memory, as region offsets.
fn device_queue<'a>(
    region: DmaRegion<'a>,
    queue: SimQueue,
    legacy: bool,
    features: Features,
) -> Box<dyn DeviceQueue + 'a> {
    let area = GrantedArea::new(region);
    let offset = |address: u64| (address - BUS) as usize;
    if legacy {
        let desc = queue.pfn as usize * 4096 - BUS as usize;
        let layout = SplitLayout::new(queue.size, true).unwrap();
        let ring = region.subregion(desc, layout.total()).unwrap();
        return Box::new(SplitDeviceQueue::new(ring, layout, area, features).unwrap());
    }
    if features.has(bits::RING_PACKED) {
        let layout = PackedLayout::from_offsets(
            queue.size,
            offset(queue.desc),
            offset(queue.driver),
            offset(queue.device),
        )
        .unwrap();
        Box::new(PackedDeviceQueue::new(region, layout, area, features).unwrap())
    } else {
        let layout = SplitLayout::from_offsets(
            queue.size,
            offset(queue.desc),
            offset(queue.driver),
            offset(queue.device),
        )
        .unwrap();
        Box::new(SplitDeviceQueue::new(region, layout, area, features).unwrap())
    }
}

/// Initialises a block device over `transport`, runs a write and a read through queue 0, and
/// checks notifications, interrupts and configuration reads on the way.
fn drive_block<T: Transport>(transport: &mut T, core: &Core, wanted: Features) -> Features {
    let memory = memory();
    let region = memory.region(BUS);
    let ring = region.subregion(RING_OFFSET, INDIRECT_OFFSET).unwrap();
    let legacy = transport.is_legacy();
    let mut driver: Option<Box<dyn DriverQueue + '_>> = None;
    let negotiated = initialize(transport, wanted, |transport, features| {
        let queue: Box<dyn DriverQueue> = if features.has(bits::RING_PACKED) {
            Box::new(PackedQueue::<8>::new(ring, features)?)
        } else {
            Box::new(SplitQueue::<8>::new(ring, features, legacy)?)
        };
        transport.enable_queue(0, queue.size(), queue.addresses())?;
        driver = Some(queue);
        Ok(())
    })
    .unwrap();
    let mut driver = driver.unwrap();
    let expected_status = status::ACKNOWLEDGE
        | status::DRIVER
        | status::DRIVER_OK
        | if legacy { 0 } else { status::FEATURES_OK };
    assert_eq!(core.borrow().status, expected_status);
    assert_eq!(negotiated.has(bits::VERSION_1), !legacy);

    let mut capacity = [0u8; 8];
    read_config(transport, blk::config::CAPACITY, &mut capacity).unwrap();
    assert_eq!(u64::from_le_bytes(capacity), 64);

    let queue = core.borrow().queues[0];
    let mut device = device_queue(region, queue, legacy, negotiated);
    let area = GrantedArea::new(region);
    let mut disk = BlockModel::new(64);
    submit_block(
        &mut *driver,
        &region,
        0,
        blk::request_type::OUT,
        1,
        Some(b"over the transport"),
        0,
    )
    .unwrap();
    if driver.should_notify().unwrap() {
        transport.notify(0).unwrap();
    }
    assert_eq!(core.borrow().notifications, vec![0]);
    disk.serve(&mut *device, &area).unwrap();
    if device.should_interrupt().unwrap() {
        core.borrow_mut().isr |= 1;
    }
    assert!(transport.ack_interrupt().queue);
    assert!(
        !transport.ack_interrupt().queue,
        "reading the ISR acknowledged it"
    );
    let done = driver.poll_used().unwrap().unwrap();
    assert_eq!(done.written, 1);
    assert_eq!(&disk.disk[512..530], b"over the transport");
    negotiated
}

fn block_features() -> Features {
    Features::from_bits(&[
        bits::EVENT_IDX,
        bits::INDIRECT_DESC,
        blk::features::FLUSH,
        bits::VERSION_1,
    ])
}

#[test]
fn pci_modern_split_and_packed() {
    let core = self::core(block_features().0, 8);
    let mut transport = pci_modern(&core);
    let negotiated = drive_block(&mut transport, &core, block_features());
    assert!(negotiated.has(bits::EVENT_IDX) && !negotiated.has(bits::RING_PACKED));

    let packed = block_features().with(bits::RING_PACKED);
    let core = self::core(packed.0, 8);
    let mut transport = pci_modern(&core);
    let negotiated = drive_block(&mut transport, &core, packed);
    assert!(negotiated.has(bits::RING_PACKED));
}

#[test]
fn pci_legacy_transitional_device() {
    // A legacy device offers no VERSION_1: the legacy sequence (§3.1.2) runs, without
    // FEATURES_OK, and the queue must have the legacy layout.
    let offered = Features::from_bits(&[bits::EVENT_IDX, blk::features::FLUSH]);
    let core = self::core(offered.0, 8);
    let mut transport =
        PciLegacyTransport::new(id::BLOCK, SimRegisters::new(&core, Window::LegacyIo), false);
    let negotiated = drive_block(&mut transport, &core, block_features());
    assert_eq!(negotiated, offered);
}

#[test]
fn mmio_version_2_and_legacy_version_1() {
    let core = self::core(block_features().0, 8);
    let mut transport = MmioTransport::new(SimRegisters::new(&core, Window::Mmio(2))).unwrap();
    assert_eq!(transport.device_type(), id::BLOCK);
    drive_block(&mut transport, &core, block_features());

    let offered = Features::from_bits(&[bits::EVENT_IDX]);
    let core = self::core(offered.0, 8);
    let mut transport = MmioTransport::new(SimRegisters::new(&core, Window::Mmio(1))).unwrap();
    assert!(transport.is_legacy());
    assert_eq!(
        drive_block(&mut transport, &core, block_features()),
        offered
    );
    assert_eq!(core.borrow().page_size, 4096);
}

#[test]
fn refused_features_set_failed() {
    let core = self::core(block_features().0, 8);
    core.borrow_mut().refuse = 1 << bits::EVENT_IDX;
    let mut transport = pci_modern(&core);
    let result = initialize(&mut transport, block_features(), |_, _| {
        panic!("no setup after refusal")
    });
    assert_eq!(result, Err(Error::FeaturesRejected));
    assert_ne!(core.borrow().status & status::FAILED, 0);
    assert_eq!(core.borrow().status & status::DRIVER_OK, 0);
}

#[test]
fn modern_device_without_version_1_is_refused() {
    let core = self::core(Features::from_bits(&[bits::EVENT_IDX]).0, 8);
    let mut transport = MmioTransport::new(SimRegisters::new(&core, Window::Mmio(2))).unwrap();
    assert_eq!(
        initialize(&mut transport, block_features(), |_, _| Ok(())),
        Err(Error::FeaturesRejected)
    );
    assert_ne!(core.borrow().status & status::FAILED, 0);
}

#[test]
fn setup_errors_set_failed() {
    let core = self::core(block_features().0, 8);
    let mut transport = pci_modern(&core);
    let result = initialize(&mut transport, block_features(), |transport, _| {
        transport.max_queue_size(7).map(|_| ())
    });
    assert_eq!(result, Err(Error::QueueUnavailable));
    assert_ne!(core.borrow().status & status::FAILED, 0);
}

#[test]
fn config_reads_retry_until_generation_is_stable() {
    let core = self::core(block_features().0, 8);
    let mut transport = pci_modern(&core);
    core.borrow_mut().unstable_reads = 3;
    let mut capacity = [0u8; 8];
    read_config(&mut transport, 0, &mut capacity).unwrap();
    assert_eq!(u64::from_le_bytes(capacity), 64);
    assert!(core.borrow().generation >= 3);
    core.borrow_mut().unstable_reads = u32::MAX;
    assert_eq!(
        read_config(&mut transport, 0, &mut capacity),
        Err(Error::ConfigUnstable)
    );
    assert_eq!(
        transport.read_config_u32(0x40),
        Err(Error::ConfigOutOfRange)
    );
}

#[test]
fn legacy_transport_needs_legacy_layout() {
    let offered = Features::from_bits(&[]);
    let core = self::core(offered.0, 8);
    let mut transport =
        PciLegacyTransport::new(id::BLOCK, SimRegisters::new(&core, Window::LegacyIo), false);
    let memory = memory();
    let ring = memory.region(BUS);
    let result = initialize(&mut transport, block_features(), |transport, features| {
        let queue = SplitQueue::<8>::new(ring, features, false)?;
        transport.enable_queue(0, 8, queue.addresses())
    });
    assert_eq!(result, Err(Error::LegacyLayout));
}

#[test]
fn pci_capability_walk_rejects_non_virtio() {
    let core = self::core(0, 8);
    let mut config = SimRegisters::new(&core, Window::PciConfig);
    config.pci_config[0] = 0; // vendor
    assert_eq!(
        VirtioPciCapabilities::find(&mut config),
        Err(Error::NoDevice)
    );
    let mut config = SimRegisters::new(&core, Window::PciConfig);
    config.pci_config[0x61] = 0; // end the list before ISR
    assert_eq!(
        VirtioPciCapabilities::find(&mut config),
        Err(Error::NoDevice)
    );
    let mut config = SimRegisters::new(&core, Window::PciConfig);
    config.pci_config[0x99] = 0x40; // loop back to the start
    assert!(
        VirtioPciCapabilities::find(&mut config).is_ok(),
        "a looping list terminates"
    );
    assert_eq!(pci::device_type(0x1042, 0), Some(2));
    assert_eq!(pci::device_type(0x1001, 2), Some(2));
    assert_eq!(pci::device_type(0x2000, 2), None);
}

#[test]
fn pci_probe_prefers_modern_and_falls_back_to_legacy() {
    let map = |core: &Core| {
        let core = core.clone();
        move |window: &pci::CapabilityWindow| {
            let kind = match window.offset {
                0 => Window::Common,
                0x1000 => Window::Notify,
                0x2000 => Window::Isr,
                _ => Window::Device,
            };
            Ok(SimRegisters::new(&core, kind))
        }
    };
    // Modern capabilities present: the modern interface, VERSION_1 negotiated.
    let core = self::core(block_features().0, 8);
    let mut config = SimRegisters::new(&core, Window::PciConfig);
    let legacy_core = core.clone();
    let mut transport = pci::PciTransport::probe(
        &mut config,
        map(&core),
        || Ok(SimRegisters::new(&legacy_core, Window::LegacyIo)),
        false,
    )
    .unwrap();
    assert!(matches!(transport, pci::PciTransport::Modern(_)));
    assert_eq!(transport.device_type(), id::BLOCK);
    assert!(drive_block(&mut transport, &core, block_features()).has(bits::VERSION_1));

    // A transitional block device (0x1001, subsystem 2) without capabilities: legacy I/O BAR.
    let offered = Features::from_bits(&[bits::EVENT_IDX]);
    let core = self::core(offered.0, 8);
    let mut config = SimRegisters::new(&core, Window::PciConfig);
    config.pci_config[2..4].copy_from_slice(&0x1001u16.to_le_bytes());
    config.pci_config[0x2e..0x30].copy_from_slice(&2u16.to_le_bytes());
    config.pci_config[6] = 0; // no capability list
    let legacy_core = core.clone();
    let mut transport = pci::PciTransport::probe(
        &mut config,
        map(&core),
        || Ok(SimRegisters::new(&legacy_core, Window::LegacyIo)),
        false,
    )
    .unwrap();
    assert!(transport.is_legacy());
    assert_eq!(
        drive_block(&mut transport, &core, block_features()),
        offered
    );

    // A modern-only ID without capabilities is not a usable device.
    let mut config = SimRegisters::new(&core, Window::PciConfig);
    config.pci_config[6] = 0;
    let result =
        pci::PciTransport::probe(&mut config, map(&core), || panic!("no legacy BAR"), false);
    assert!(matches!(result, Err(Error::NoDevice)));
}
