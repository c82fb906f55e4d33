//! VirtIO over MMIO (§4.2): version 2, and the legacy version 1 (§4.2.4).

use super::{InterruptStatus, RegisterAccess, Transport, legacy_queue_pfn};
use crate::features::Features;
use crate::queue::QueueAddresses;
use crate::{Error, Result};

/// Register offsets (§4.2.2; legacy-only registers from §4.2.4).
pub mod reg {
    /// "virt" in little-endian.
    pub const MAGIC_VALUE: usize = 0x000;
    /// 2 for modern devices, 1 for legacy.
    pub const VERSION: usize = 0x004;
    /// Device type; 0 means no device.
    pub const DEVICE_ID: usize = 0x008;
    /// Vendor ID.
    pub const VENDOR_ID: usize = 0x00c;
    /// 32 offered feature bits, chosen by `DEVICE_FEATURES_SEL`.
    pub const DEVICE_FEATURES: usize = 0x010;
    /// Selects the 32-bit word of `DEVICE_FEATURES`.
    pub const DEVICE_FEATURES_SEL: usize = 0x014;
    /// 32 accepted feature bits, chosen by `DRIVER_FEATURES_SEL`.
    pub const DRIVER_FEATURES: usize = 0x020;
    /// Selects the 32-bit word of `DRIVER_FEATURES`.
    pub const DRIVER_FEATURES_SEL: usize = 0x024;
    /// Legacy: guest page size, for `QUEUE_PFN`.
    pub const GUEST_PAGE_SIZE: usize = 0x028;
    /// Queue the queue registers refer to.
    pub const QUEUE_SEL: usize = 0x030;
    /// Largest size of the selected queue; 0 if it does not exist.
    pub const QUEUE_NUM_MAX: usize = 0x034;
    /// Size of the selected queue.
    pub const QUEUE_NUM: usize = 0x038;
    /// Legacy: used ring alignment.
    pub const QUEUE_ALIGN: usize = 0x03c;
    /// Legacy: page frame number of the queue; 0 when not in use.
    pub const QUEUE_PFN: usize = 0x040;
    /// Version 2: 1 when the selected queue is ready.
    pub const QUEUE_READY: usize = 0x044;
    /// Write a queue index to notify it.
    pub const QUEUE_NOTIFY: usize = 0x050;
    /// Interrupt cause bits.
    pub const INTERRUPT_STATUS: usize = 0x060;
    /// Write cause bits to acknowledge them.
    pub const INTERRUPT_ACK: usize = 0x064;
    /// Device status.
    pub const STATUS: usize = 0x070;
    /// Descriptor area, low 32 bits.
    pub const QUEUE_DESC_LOW: usize = 0x080;
    /// Driver area, low 32 bits.
    pub const QUEUE_DRIVER_LOW: usize = 0x090;
    /// Device area, low 32 bits.
    pub const QUEUE_DEVICE_LOW: usize = 0x0a0;
    /// Version 2: configuration generation.
    pub const CONFIG_GENERATION: usize = 0x0fc;
    /// Start of device configuration space.
    pub const CONFIG: usize = 0x100;
}

/// "virt" (§4.2.2).
pub const MAGIC: u32 = 0x7472_6976;
/// Page size this driver programs into a legacy device.
pub const LEGACY_PAGE_SIZE: u32 = 4096;
/// Size of the register window including configuration space this transport accepts.
pub const WINDOW_SIZE: usize = 0x1000;

/// A VirtIO MMIO device, version 1 or 2.
#[derive(Debug)]
pub struct MmioTransport<R> {
    regs: R,
    version: u32,
    device_type: u32,
}

impl<R: RegisterAccess> MmioTransport<R> {
    /// Probes `regs` (§4.2.3.1.1: magic, version, device ID 0 means "no device").
    pub fn new(mut regs: R) -> Result<Self> {
        if regs.read_u32(reg::MAGIC_VALUE) != MAGIC {
            return Err(Error::NoDevice);
        }
        let version = regs.read_u32(reg::VERSION);
        if version != 1 && version != 2 {
            return Err(Error::UnsupportedVersion);
        }
        let device_type = regs.read_u32(reg::DEVICE_ID);
        if device_type == 0 {
            return Err(Error::NoDevice);
        }
        Ok(Self {
            regs,
            version,
            device_type,
        })
    }

    /// 1 (legacy) or 2.
    pub fn version(&self) -> u32 {
        self.version
    }

    fn config_offset(offset: usize, size: usize) -> Result<usize> {
        match offset.checked_add(size) {
            Some(end) if end <= WINDOW_SIZE - reg::CONFIG => Ok(reg::CONFIG + offset),
            _ => Err(Error::ConfigOutOfRange),
        }
    }
}

impl<R: RegisterAccess> Transport for MmioTransport<R> {
    fn device_type(&self) -> u32 {
        self.device_type
    }
    fn is_legacy(&self) -> bool {
        self.version == 1
    }
    fn device_features(&mut self) -> Features {
        self.regs.write_u32(reg::DEVICE_FEATURES_SEL, 0);
        let low = self.regs.read_u32(reg::DEVICE_FEATURES);
        self.regs.write_u32(reg::DEVICE_FEATURES_SEL, 1);
        let high = self.regs.read_u32(reg::DEVICE_FEATURES);
        Features(u64::from(high) << 32 | u64::from(low))
    }
    fn set_driver_features(&mut self, features: Features) {
        self.regs.write_u32(reg::DRIVER_FEATURES_SEL, 0);
        self.regs.write_u32(reg::DRIVER_FEATURES, features.0 as u32);
        self.regs.write_u32(reg::DRIVER_FEATURES_SEL, 1);
        self.regs
            .write_u32(reg::DRIVER_FEATURES, (features.0 >> 32) as u32);
    }
    fn status(&mut self) -> u8 {
        self.regs.read_u32(reg::STATUS) as u8
    }
    fn set_status(&mut self, status: u8) {
        self.regs.write_u32(reg::STATUS, u32::from(status));
    }
    fn max_queue_size(&mut self, queue: u16) -> Result<u16> {
        self.regs.write_u32(reg::QUEUE_SEL, u32::from(queue));
        let in_use = if self.version == 1 {
            self.regs.read_u32(reg::QUEUE_PFN) != 0
        } else {
            self.regs.read_u32(reg::QUEUE_READY) != 0
        };
        if in_use {
            return Err(Error::QueueUnavailable);
        }
        match self.regs.read_u32(reg::QUEUE_NUM_MAX) {
            0 => Err(Error::QueueUnavailable),
            max => Ok(u16::try_from(max).unwrap_or(u16::MAX)),
        }
    }
    fn enable_queue(&mut self, queue: u16, size: u16, addresses: QueueAddresses) -> Result<()> {
        let max = self.max_queue_size(queue)?;
        if size == 0 || size > max {
            return Err(Error::BadQueueSize);
        }
        self.regs.write_u32(reg::QUEUE_NUM, u32::from(size));
        if self.version == 1 {
            // §4.2.4: legacy queues are one page-aligned block found through QueuePFN.
            let pfn = legacy_queue_pfn(size, &addresses, u64::from(LEGACY_PAGE_SIZE))?;
            self.regs.write_u32(reg::GUEST_PAGE_SIZE, LEGACY_PAGE_SIZE);
            self.regs.write_u32(reg::QUEUE_ALIGN, LEGACY_PAGE_SIZE);
            self.regs.write_u32(reg::QUEUE_PFN, pfn);
        } else {
            // §4.2.3.2: size, the three areas, then QueueReady.
            for (offset, address) in [
                (reg::QUEUE_DESC_LOW, addresses.desc),
                (reg::QUEUE_DRIVER_LOW, addresses.driver),
                (reg::QUEUE_DEVICE_LOW, addresses.device),
            ] {
                self.regs.write_u32(offset, address as u32);
                self.regs.write_u32(offset + 4, (address >> 32) as u32);
            }
            self.regs.write_u32(reg::QUEUE_READY, 1);
        }
        Ok(())
    }
    fn notify(&mut self, queue: u16) -> Result<()> {
        self.regs.write_u32(reg::QUEUE_NOTIFY, u32::from(queue));
        Ok(())
    }
    fn ack_interrupt(&mut self) -> InterruptStatus {
        let bits = self.regs.read_u32(reg::INTERRUPT_STATUS);
        // §4.2.3.4: acknowledge exactly the causes that were read.
        self.regs.write_u32(reg::INTERRUPT_ACK, bits);
        InterruptStatus::from_bits(bits)
    }
    fn config_generation(&mut self) -> u32 {
        if self.version == 1 {
            0
        } else {
            self.regs.read_u32(reg::CONFIG_GENERATION)
        }
    }
    fn read_config_u8(&mut self, offset: usize) -> Result<u8> {
        Ok(self.regs.read_u8(Self::config_offset(offset, 1)?))
    }
    fn read_config_u16(&mut self, offset: usize) -> Result<u16> {
        Ok(self.regs.read_u16(Self::config_offset(offset, 2)?))
    }
    fn read_config_u32(&mut self, offset: usize) -> Result<u32> {
        Ok(self.regs.read_u32(Self::config_offset(offset, 4)?))
    }
    fn write_config_u8(&mut self, offset: usize, value: u8) -> Result<()> {
        self.regs.write_u8(Self::config_offset(offset, 1)?, value);
        Ok(())
    }
    fn write_config_u16(&mut self, offset: usize, value: u16) -> Result<()> {
        self.regs.write_u16(Self::config_offset(offset, 2)?, value);
        Ok(())
    }
    fn write_config_u32(&mut self, offset: usize, value: u32) -> Result<()> {
        self.regs.write_u32(Self::config_offset(offset, 4)?, value);
        Ok(())
    }
}
