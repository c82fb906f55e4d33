//! VirtIO over PCI (§4.1): discovery, the modern capability-based interface, and the legacy
//! I/O BAR interface of transitional devices.

use super::{InterruptStatus, RegisterAccess, Transport, legacy_queue_pfn};
use crate::features::Features;
use crate::queue::QueueAddresses;
use crate::{Error, Result};

/// PCI vendor ID of all VirtIO devices (§4.1.2).
pub const VENDOR_ID: u16 = 0x1af4;

/// The VirtIO device type of a PCI function, from its device ID and subsystem ID (§4.1.2:
/// modern IDs are 0x1040 + type; transitional IDs 0x1000..=0x103f carry the type in the
/// subsystem device ID).
pub fn device_type(device_id: u16, subsystem_id: u16) -> Option<u32> {
    match device_id {
        0x1000..=0x103f => Some(u32::from(subsystem_id)),
        0x1040..=0x107f => Some(u32::from(device_id - 0x1040)),
        _ => None,
    }
}

/// `cfg_type` values of VirtIO vendor capabilities (§4.1.4).
pub mod cap_type {
    /// Common configuration.
    pub const COMMON: u8 = 1;
    /// Notifications.
    pub const NOTIFY: u8 = 2;
    /// ISR status.
    pub const ISR: u8 = 3;
    /// Device-specific configuration.
    pub const DEVICE: u8 = 4;
    /// PCI configuration access.
    pub const PCI_CFG: u8 = 5;
    /// Shared memory region.
    pub const SHARED_MEMORY: u8 = 8;
    /// Vendor-specific data.
    pub const VENDOR: u8 = 9;
}

/// Where one VirtIO structure lives: `length` bytes at `offset` in BAR `bar` (§4.1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapabilityWindow {
    /// BAR index, 0..=5.
    pub bar: u8,
    /// Offset inside the BAR.
    pub offset: u32,
    /// Length of the structure.
    pub length: u32,
}

/// The VirtIO structures a modern PCI device exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioPciCapabilities {
    /// Common configuration (§4.1.4.3).
    pub common: CapabilityWindow,
    /// Notification area (§4.1.4.4).
    pub notify: CapabilityWindow,
    /// Multiplier for `queue_notify_off` (§4.1.4.4).
    pub notify_off_multiplier: u32,
    /// ISR status (§4.1.4.5).
    pub isr: CapabilityWindow,
    /// Device-specific configuration (§4.1.4.6), if the device has any.
    pub device: Option<CapabilityWindow>,
}

const PCI_STATUS: usize = 0x06;
const PCI_STATUS_CAP_LIST: u16 = 1 << 4;
const PCI_CAP_POINTER: usize = 0x34;
const PCI_CAP_ID_VENDOR: u8 = 0x09;
/// Capabilities live in the 192 bytes after the standard header; more than 48 of 4+ bytes
/// means the list loops.
const MAX_CAPABILITIES: usize = 48;

impl VirtioPciCapabilities {
    /// Walks the capability list in PCI configuration space `config` (§4.1.4). The first
    /// capability of each type whose BAR is valid wins (§4.1.4.1: "The driver SHOULD use the
    /// first instance of each virtio structure type it can support").
    pub fn find(config: &mut impl RegisterAccess) -> Result<Self> {
        if config.read_u16(0) != VENDOR_ID || config.read_u16(PCI_STATUS) & PCI_STATUS_CAP_LIST == 0
        {
            return Err(Error::NoDevice);
        }
        let (mut common, mut notify, mut isr, mut device) = (None, None, None, None);
        let mut multiplier = 0;
        let mut pointer = usize::from(config.read_u8(PCI_CAP_POINTER) & !3);
        for _ in 0..MAX_CAPABILITIES {
            if pointer < 0x40 {
                break;
            }
            let id = config.read_u8(pointer);
            let next = usize::from(config.read_u8(pointer + 1) & !3);
            if id == PCI_CAP_ID_VENDOR && config.read_u8(pointer + 2) >= 16 {
                let cfg_type = config.read_u8(pointer + 3);
                let window = CapabilityWindow {
                    bar: config.read_u8(pointer + 4),
                    offset: config.read_u32(pointer + 8),
                    length: config.read_u32(pointer + 12),
                };
                // §4.1.4.1: BAR values 0x6..0xff are reserved; ignore such capabilities.
                if window.bar <= 5 {
                    match cfg_type {
                        cap_type::COMMON if common.is_none() => common = Some(window),
                        cap_type::NOTIFY
                            if notify.is_none() && config.read_u8(pointer + 2) >= 20 =>
                        {
                            notify = Some(window);
                            multiplier = config.read_u32(pointer + 16);
                        }
                        cap_type::ISR if isr.is_none() => isr = Some(window),
                        cap_type::DEVICE if device.is_none() => device = Some(window),
                        _ => {}
                    }
                }
            }
            pointer = next;
        }
        Ok(Self {
            common: common.ok_or(Error::NoDevice)?,
            notify: notify.ok_or(Error::NoDevice)?,
            notify_off_multiplier: multiplier,
            isr: isr.ok_or(Error::NoDevice)?,
            device,
        })
    }
}

/// Offsets in the common configuration structure (§4.1.4.3).
pub mod common {
    /// le32, driver writes: which 32 feature bits `DEVICE_FEATURE` shows.
    pub const DEVICE_FEATURE_SELECT: usize = 0x00;
    /// le32, read-only: 32 offered feature bits.
    pub const DEVICE_FEATURE: usize = 0x04;
    /// le32: which 32 feature bits `DRIVER_FEATURE` sets.
    pub const DRIVER_FEATURE_SELECT: usize = 0x08;
    /// le32: 32 accepted feature bits.
    pub const DRIVER_FEATURE: usize = 0x0c;
    /// le16: MSI-X vector for configuration changes.
    pub const CONFIG_MSIX_VECTOR: usize = 0x10;
    /// le16, read-only: number of queues.
    pub const NUM_QUEUES: usize = 0x12;
    /// u8: device status.
    pub const DEVICE_STATUS: usize = 0x14;
    /// u8, read-only: configuration generation.
    pub const CONFIG_GENERATION: usize = 0x15;
    /// le16: queue the following fields refer to.
    pub const QUEUE_SELECT: usize = 0x16;
    /// le16: queue size (max on reset, driver may lower).
    pub const QUEUE_SIZE: usize = 0x18;
    /// le16: MSI-X vector for the queue.
    pub const QUEUE_MSIX_VECTOR: usize = 0x1a;
    /// le16: 1 when the queue is enabled.
    pub const QUEUE_ENABLE: usize = 0x1c;
    /// le16, read-only: notification offset of the queue.
    pub const QUEUE_NOTIFY_OFF: usize = 0x1e;
    /// le64: descriptor area.
    pub const QUEUE_DESC: usize = 0x20;
    /// le64: driver area.
    pub const QUEUE_DRIVER: usize = 0x28;
    /// le64: device area.
    pub const QUEUE_DEVICE: usize = 0x30;
    /// le16 (1.2): notification data for the queue.
    pub const QUEUE_NOTIFY_DATA: usize = 0x38;
    /// le16 (1.2): per-queue reset.
    pub const QUEUE_RESET: usize = 0x3a;
    /// Size of the structure without the 1.2 additions.
    pub const MIN_LENGTH: u32 = 0x38;
}

/// No MSI-X vector (§4.1.4.3).
pub const NO_VECTOR: u16 = 0xffff;
/// Queues whose notification offsets are remembered; a device with more is refused beyond it.
pub const MAX_QUEUES: usize = 64;

/// The modern PCI interface, through windows onto the capability structures.
#[derive(Debug)]
pub struct PciModernTransport<R> {
    device_type: u32,
    common: R,
    notify: R,
    notify_length: u32,
    notify_off_multiplier: u32,
    isr: R,
    device: Option<(R, u32)>,
    notify_offsets: [Option<u32>; MAX_QUEUES],
}

impl<R: RegisterAccess> PciModernTransport<R> {
    /// Builds the transport; `map` returns a register window for each capability (the
    /// partition maps the BAR and offsets into it).
    pub fn new(
        device_type: u32,
        capabilities: &VirtioPciCapabilities,
        mut map: impl FnMut(&CapabilityWindow) -> Result<R>,
    ) -> Result<Self> {
        if capabilities.common.length < common::MIN_LENGTH || capabilities.isr.length < 1 {
            return Err(Error::NoDevice);
        }
        let device = match &capabilities.device {
            Some(window) => Some((map(window)?, window.length)),
            None => None,
        };
        Ok(Self {
            device_type,
            common: map(&capabilities.common)?,
            notify: map(&capabilities.notify)?,
            notify_length: capabilities.notify.length,
            notify_off_multiplier: capabilities.notify_off_multiplier,
            isr: map(&capabilities.isr)?,
            device,
            notify_offsets: [None; MAX_QUEUES],
        })
    }

    /// Number of queues the device has.
    pub fn num_queues(&mut self) -> u16 {
        self.common.read_u16(common::NUM_QUEUES)
    }

    fn device_window(&mut self, offset: usize, size: usize) -> Result<&mut R> {
        match &mut self.device {
            Some((window, length))
                if offset
                    .checked_add(size)
                    .is_some_and(|end| end <= *length as usize) =>
            {
                Ok(window)
            }
            _ => Err(Error::ConfigOutOfRange),
        }
    }
}

impl<R: RegisterAccess> Transport for PciModernTransport<R> {
    fn device_type(&self) -> u32 {
        self.device_type
    }
    fn is_legacy(&self) -> bool {
        false
    }
    fn device_features(&mut self) -> Features {
        self.common.write_u32(common::DEVICE_FEATURE_SELECT, 0);
        let low = self.common.read_u32(common::DEVICE_FEATURE);
        self.common.write_u32(common::DEVICE_FEATURE_SELECT, 1);
        let high = self.common.read_u32(common::DEVICE_FEATURE);
        Features(u64::from(high) << 32 | u64::from(low))
    }
    fn set_driver_features(&mut self, features: Features) {
        self.common.write_u32(common::DRIVER_FEATURE_SELECT, 0);
        self.common
            .write_u32(common::DRIVER_FEATURE, features.0 as u32);
        self.common.write_u32(common::DRIVER_FEATURE_SELECT, 1);
        self.common
            .write_u32(common::DRIVER_FEATURE, (features.0 >> 32) as u32);
    }
    fn status(&mut self) -> u8 {
        self.common.read_u8(common::DEVICE_STATUS)
    }
    fn set_status(&mut self, status: u8) {
        if status == 0 {
            self.notify_offsets = [None; MAX_QUEUES];
        }
        self.common.write_u8(common::DEVICE_STATUS, status);
    }
    fn max_queue_size(&mut self, queue: u16) -> Result<u16> {
        if usize::from(queue) >= MAX_QUEUES || queue >= self.num_queues() {
            return Err(Error::QueueUnavailable);
        }
        self.common.write_u16(common::QUEUE_SELECT, queue);
        if self.common.read_u16(common::QUEUE_ENABLE) != 0 {
            return Err(Error::QueueUnavailable);
        }
        match self.common.read_u16(common::QUEUE_SIZE) {
            0 => Err(Error::QueueUnavailable),
            size => Ok(size),
        }
    }
    fn enable_queue(&mut self, queue: u16, size: u16, addresses: QueueAddresses) -> Result<()> {
        let max = self.max_queue_size(queue)?;
        if size == 0 || size > max {
            return Err(Error::BadQueueSize);
        }
        // §4.1.5.1.3: select, size, areas, then read the notify offset, then enable.
        self.common.write_u16(common::QUEUE_SIZE, size);
        self.common.write_u16(common::QUEUE_MSIX_VECTOR, NO_VECTOR);
        for (offset, address) in [
            (common::QUEUE_DESC, addresses.desc),
            (common::QUEUE_DRIVER, addresses.driver),
            (common::QUEUE_DEVICE, addresses.device),
        ] {
            self.common.write_u32(offset, address as u32);
            self.common.write_u32(offset + 4, (address >> 32) as u32);
        }
        let notify_off = u32::from(self.common.read_u16(common::QUEUE_NOTIFY_OFF));
        // §4.1.4.4: the notification address is cap.offset + queue_notify_off * multiplier;
        // it has to lie inside the notification structure.
        let offset = notify_off
            .checked_mul(self.notify_off_multiplier)
            .ok_or(Error::OutOfBounds)?;
        if offset
            .checked_add(2)
            .is_none_or(|end| end > self.notify_length)
        {
            return Err(Error::OutOfBounds);
        }
        self.notify_offsets[usize::from(queue)] = Some(offset);
        self.common.write_u16(common::QUEUE_ENABLE, 1);
        Ok(())
    }
    fn notify(&mut self, queue: u16) -> Result<()> {
        let offset = self
            .notify_offsets
            .get(usize::from(queue))
            .copied()
            .flatten()
            .ok_or(Error::QueueUnavailable)?;
        // §4.1.5.2: without NOTIFICATION_DATA the driver writes the queue index.
        self.notify.write_u16(offset as usize, queue);
        Ok(())
    }
    fn ack_interrupt(&mut self) -> InterruptStatus {
        // §4.1.4.5: reading the ISR status resets it.
        InterruptStatus::from_bits(u32::from(self.isr.read_u8(0)))
    }
    fn config_generation(&mut self) -> u32 {
        u32::from(self.common.read_u8(common::CONFIG_GENERATION))
    }
    fn read_config_u8(&mut self, offset: usize) -> Result<u8> {
        Ok(self.device_window(offset, 1)?.read_u8(offset))
    }
    fn read_config_u16(&mut self, offset: usize) -> Result<u16> {
        Ok(self.device_window(offset, 2)?.read_u16(offset))
    }
    fn read_config_u32(&mut self, offset: usize) -> Result<u32> {
        Ok(self.device_window(offset, 4)?.read_u32(offset))
    }
    fn write_config_u8(&mut self, offset: usize, value: u8) -> Result<()> {
        self.device_window(offset, 1)?.write_u8(offset, value);
        Ok(())
    }
    fn write_config_u16(&mut self, offset: usize, value: u16) -> Result<()> {
        self.device_window(offset, 2)?.write_u16(offset, value);
        Ok(())
    }
    fn write_config_u32(&mut self, offset: usize, value: u32) -> Result<()> {
        self.device_window(offset, 4)?.write_u32(offset, value);
        Ok(())
    }
}

/// Register offsets of the legacy I/O BAR (§4.1.4.10).
pub mod legacy {
    /// le32, read-only: device features bits 0..31.
    pub const DEVICE_FEATURES: usize = 0x00;
    /// le32: driver features bits 0..31.
    pub const DRIVER_FEATURES: usize = 0x04;
    /// le32: page frame number (4096-byte pages) of the selected queue.
    pub const QUEUE_ADDRESS: usize = 0x08;
    /// le16, read-only: size of the selected queue.
    pub const QUEUE_SIZE: usize = 0x0c;
    /// le16: queue the above refer to.
    pub const QUEUE_SELECT: usize = 0x0e;
    /// le16: write a queue index to notify it.
    pub const QUEUE_NOTIFY: usize = 0x10;
    /// u8: device status.
    pub const DEVICE_STATUS: usize = 0x12;
    /// u8: ISR status; reading clears it.
    pub const ISR_STATUS: usize = 0x13;
    /// Device configuration without MSI-X.
    pub const CONFIG: usize = 0x14;
    /// Device configuration when MSI-X is enabled (two vector registers come first).
    pub const CONFIG_MSIX: usize = 0x18;
}

/// Legacy queues use 4096-byte alignment for the used ring (§2.7.2).
pub const LEGACY_QUEUE_ALIGN: u64 = 4096;

/// Legacy configuration space ends with the I/O BAR, whose size is at most 256 bytes here.
const LEGACY_IO_SIZE: usize = 0x100;

/// The legacy interface of a transitional PCI device, through its I/O BAR (BAR 0).
#[derive(Debug)]
pub struct PciLegacyTransport<R> {
    device_type: u32,
    io: R,
    config: usize,
}

impl<R: RegisterAccess> PciLegacyTransport<R> {
    /// Drives the device through `io` (its I/O BAR). `msix_enabled` moves the configuration
    /// space, as §4.1.4.10 describes.
    pub fn new(device_type: u32, io: R, msix_enabled: bool) -> Self {
        let config = if msix_enabled {
            legacy::CONFIG_MSIX
        } else {
            legacy::CONFIG
        };
        Self {
            device_type,
            io,
            config,
        }
    }
}

impl<R> PciLegacyTransport<R> {
    fn config_offset(&self, offset: usize, size: usize) -> Result<usize> {
        match self
            .config
            .checked_add(offset)
            .and_then(|start| Some((start, start.checked_add(size)?)))
        {
            Some((start, end)) if end <= LEGACY_IO_SIZE => Ok(start),
            _ => Err(Error::ConfigOutOfRange),
        }
    }
}

impl<R: RegisterAccess> Transport for PciLegacyTransport<R> {
    fn device_type(&self) -> u32 {
        self.device_type
    }
    fn is_legacy(&self) -> bool {
        true
    }
    fn device_features(&mut self) -> Features {
        Features(u64::from(self.io.read_u32(legacy::DEVICE_FEATURES)))
    }
    fn set_driver_features(&mut self, features: Features) {
        self.io
            .write_u32(legacy::DRIVER_FEATURES, features.0 as u32);
    }
    fn status(&mut self) -> u8 {
        self.io.read_u8(legacy::DEVICE_STATUS)
    }
    fn set_status(&mut self, status: u8) {
        self.io.write_u8(legacy::DEVICE_STATUS, status);
    }
    fn max_queue_size(&mut self, queue: u16) -> Result<u16> {
        self.io.write_u16(legacy::QUEUE_SELECT, queue);
        if self.io.read_u32(legacy::QUEUE_ADDRESS) != 0 {
            return Err(Error::QueueUnavailable);
        }
        match self.io.read_u16(legacy::QUEUE_SIZE) {
            0 => Err(Error::QueueUnavailable),
            size => Ok(size),
        }
    }
    fn enable_queue(&mut self, queue: u16, size: u16, addresses: QueueAddresses) -> Result<()> {
        // §4.1.4.10: the legacy queue size is fixed by the device.
        if self.max_queue_size(queue)? != size {
            return Err(Error::BadQueueSize);
        }
        let pfn = legacy_queue_pfn(size, &addresses, LEGACY_QUEUE_ALIGN)?;
        self.io.write_u32(legacy::QUEUE_ADDRESS, pfn);
        Ok(())
    }
    fn notify(&mut self, queue: u16) -> Result<()> {
        self.io.write_u16(legacy::QUEUE_NOTIFY, queue);
        Ok(())
    }
    fn ack_interrupt(&mut self) -> InterruptStatus {
        InterruptStatus::from_bits(u32::from(self.io.read_u8(legacy::ISR_STATUS)))
    }
    fn config_generation(&mut self) -> u32 {
        0
    }
    fn read_config_u8(&mut self, offset: usize) -> Result<u8> {
        let at = self.config_offset(offset, 1)?;
        Ok(self.io.read_u8(at))
    }
    fn read_config_u16(&mut self, offset: usize) -> Result<u16> {
        let at = self.config_offset(offset, 2)?;
        Ok(self.io.read_u16(at))
    }
    fn read_config_u32(&mut self, offset: usize) -> Result<u32> {
        let at = self.config_offset(offset, 4)?;
        Ok(self.io.read_u32(at))
    }
    fn write_config_u8(&mut self, offset: usize, value: u8) -> Result<()> {
        let at = self.config_offset(offset, 1)?;
        self.io.write_u8(at, value);
        Ok(())
    }
    fn write_config_u16(&mut self, offset: usize, value: u16) -> Result<()> {
        let at = self.config_offset(offset, 2)?;
        self.io.write_u16(at, value);
        Ok(())
    }
    fn write_config_u32(&mut self, offset: usize, value: u32) -> Result<()> {
        let at = self.config_offset(offset, 4)?;
        self.io.write_u32(at, value);
        Ok(())
    }
}

/// Either PCI interface, chosen by [`PciTransport::probe`].
// One long-lived value per device, and boxing would need `alloc`: the size difference is fine.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum PciTransport<R> {
    /// The capability-based interface (VirtIO 1.x).
    Modern(PciModernTransport<R>),
    /// The legacy I/O BAR of a transitional device.
    Legacy(PciLegacyTransport<R>),
}

const PCI_DEVICE_ID: usize = 0x02;
const PCI_SUBSYSTEM_ID: usize = 0x2e;

impl<R: RegisterAccess> PciTransport<R> {
    /// Uses the modern interface when the function has the VirtIO capabilities, and falls back
    /// to the legacy I/O BAR (`legacy_io`) for a transitional device without them
    /// (§4.1.2.3, §4.1.4.10). `map` maps a capability's window, as for
    /// [`PciModernTransport::new`].
    pub fn probe(
        config: &mut impl RegisterAccess,
        map: impl FnMut(&CapabilityWindow) -> Result<R>,
        legacy_io: impl FnOnce() -> Result<R>,
        msix_enabled: bool,
    ) -> Result<Self> {
        if config.read_u16(0) != VENDOR_ID {
            return Err(Error::NoDevice);
        }
        let device_id = config.read_u16(PCI_DEVICE_ID);
        let device_type =
            device_type(device_id, config.read_u16(PCI_SUBSYSTEM_ID)).ok_or(Error::NoDevice)?;
        match VirtioPciCapabilities::find(config) {
            Ok(capabilities) => Ok(Self::Modern(PciModernTransport::new(
                device_type,
                &capabilities,
                map,
            )?)),
            // Only transitional IDs (0x1000..=0x103f) have a legacy interface.
            Err(Error::NoDevice) if device_id < 0x1040 => Ok(Self::Legacy(
                PciLegacyTransport::new(device_type, legacy_io()?, msix_enabled),
            )),
            Err(error) => Err(error),
        }
    }
}

macro_rules! delegate {
    ($self:ident, $transport:ident => $call:expr) => {
        match $self {
            PciTransport::Modern($transport) => $call,
            PciTransport::Legacy($transport) => $call,
        }
    };
}

impl<R: RegisterAccess> Transport for PciTransport<R> {
    fn device_type(&self) -> u32 {
        delegate!(self, t => t.device_type())
    }
    fn is_legacy(&self) -> bool {
        delegate!(self, t => t.is_legacy())
    }
    fn device_features(&mut self) -> Features {
        delegate!(self, t => t.device_features())
    }
    fn set_driver_features(&mut self, features: Features) {
        delegate!(self, t => t.set_driver_features(features))
    }
    fn status(&mut self) -> u8 {
        delegate!(self, t => t.status())
    }
    fn set_status(&mut self, status: u8) {
        delegate!(self, t => t.set_status(status))
    }
    fn max_queue_size(&mut self, queue: u16) -> Result<u16> {
        delegate!(self, t => t.max_queue_size(queue))
    }
    fn enable_queue(&mut self, queue: u16, size: u16, addresses: QueueAddresses) -> Result<()> {
        delegate!(self, t => t.enable_queue(queue, size, addresses))
    }
    fn notify(&mut self, queue: u16) -> Result<()> {
        delegate!(self, t => t.notify(queue))
    }
    fn ack_interrupt(&mut self) -> InterruptStatus {
        delegate!(self, t => t.ack_interrupt())
    }
    fn config_generation(&mut self) -> u32 {
        delegate!(self, t => t.config_generation())
    }
    fn read_config_u8(&mut self, offset: usize) -> Result<u8> {
        delegate!(self, t => t.read_config_u8(offset))
    }
    fn read_config_u16(&mut self, offset: usize) -> Result<u16> {
        delegate!(self, t => t.read_config_u16(offset))
    }
    fn read_config_u32(&mut self, offset: usize) -> Result<u32> {
        delegate!(self, t => t.read_config_u32(offset))
    }
    fn write_config_u8(&mut self, offset: usize, value: u8) -> Result<()> {
        delegate!(self, t => t.write_config_u8(offset, value))
    }
    fn write_config_u16(&mut self, offset: usize, value: u16) -> Result<()> {
        delegate!(self, t => t.write_config_u16(offset, value))
    }
    fn write_config_u32(&mut self, offset: usize, value: u32) -> Result<()> {
        delegate!(self, t => t.write_config_u32(offset, value))
    }
}
