//! Transports: how a driver reaches a device's status, features, queues, notifications and
//! configuration space. One trait, several implementations:
//! - [`pci::PciModernTransport`]: PCI with vendor capabilities (§4.1.4),
//! - [`pci::PciLegacyTransport`]: transitional devices through the legacy I/O BAR (§4.1.4.10),
//! - [`mmio::MmioTransport`]: MMIO version 2 and legacy version 1 (§4.2.2, §4.2.4),
//! - [`shmem::SharedMemoryTransport`]: Bulkhead's inter-partition channel (docs/virtio.md).
//!
//! [`initialize`] runs the specification's initialisation sequence over any of them.

pub mod mmio;
pub mod pci;
pub mod shmem;

use crate::features::{Features, bits, status};
use crate::queue::QueueAddresses;
use crate::{Error, Result};

/// Access to a window of device registers: memory-mapped registers, an I/O port range, or PCI
/// configuration space. Partitions implement it with volatile accesses
/// ([`crate::dma::MmioRegisters`]) or port instructions; tests with a simulated device.
/// Offsets are relative to the window; values are little-endian register values.
pub trait RegisterAccess {
    /// Reads an 8-bit register.
    fn read_u8(&mut self, offset: usize) -> u8;
    /// Reads a 16-bit register.
    fn read_u16(&mut self, offset: usize) -> u16;
    /// Reads a 32-bit register.
    fn read_u32(&mut self, offset: usize) -> u32;
    /// Writes an 8-bit register.
    fn write_u8(&mut self, offset: usize, value: u8);
    /// Writes a 16-bit register.
    fn write_u16(&mut self, offset: usize, value: u16);
    /// Writes a 32-bit register.
    fn write_u32(&mut self, offset: usize, value: u32);
}

/// What an interrupt was for (§4.1.4.5 ISR bits, §4.2.2 InterruptStatus bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InterruptStatus {
    /// A used buffer notification: some queue has completions.
    pub queue: bool,
    /// The device configuration changed.
    pub configuration: bool,
}

impl InterruptStatus {
    pub(crate) fn from_bits(bits: u32) -> Self {
        Self {
            queue: bits & 1 != 0,
            configuration: bits & 2 != 0,
        }
    }
}

/// A way of reaching one VirtIO device from its driver.
pub trait Transport {
    /// The device type (§5: 1 = network, 2 = block, ...).
    fn device_type(&self) -> u32;
    /// Whether this is a legacy interface (PCI I/O BAR, MMIO version 1): 32 feature bits, no
    /// FEATURES_OK step, page-aligned split queues only.
    fn is_legacy(&self) -> bool;
    /// The features the device offers.
    fn device_features(&mut self) -> Features;
    /// Tells the device which features the driver accepts.
    fn set_driver_features(&mut self, features: Features);
    /// Reads the device status field (§2.1).
    fn status(&mut self) -> u8;
    /// Writes the device status field; 0 requests a reset (§2.4).
    fn set_status(&mut self, status: u8);
    /// The largest size the device supports for `queue`; fails if the queue does not exist or
    /// is already in use.
    fn max_queue_size(&mut self, queue: u16) -> Result<u16>;
    /// Hands a queue of `size` entries at `addresses` to the device and enables it.
    fn enable_queue(&mut self, queue: u16, size: u16, addresses: QueueAddresses) -> Result<()>;
    /// Sends an available buffer notification for `queue` (§2.9).
    fn notify(&mut self, queue: u16) -> Result<()>;
    /// Reads and acknowledges the interrupt cause.
    fn ack_interrupt(&mut self) -> InterruptStatus;
    /// The configuration generation counter (§2.5), or 0 where the transport has none.
    fn config_generation(&mut self) -> u32;
    /// Reads a byte of device configuration space.
    fn read_config_u8(&mut self, offset: usize) -> Result<u8>;
    /// Reads a 16-bit field of device configuration space.
    fn read_config_u16(&mut self, offset: usize) -> Result<u16>;
    /// Reads a 32-bit field of device configuration space.
    fn read_config_u32(&mut self, offset: usize) -> Result<u32>;
    /// Writes a byte of device configuration space.
    fn write_config_u8(&mut self, offset: usize, value: u8) -> Result<()>;
    /// Writes a 16-bit field of device configuration space.
    fn write_config_u16(&mut self, offset: usize, value: u16) -> Result<()>;
    /// Writes a 32-bit field of device configuration space.
    fn write_config_u32(&mut self, offset: usize, value: u32) -> Result<()>;
}

/// How many times a status read-back is retried before giving up.
pub const MAX_RETRIES: u32 = 1 << 16;

/// How many times a configuration read is retried while the generation keeps changing; a
/// device changing its configuration this often is treated as broken.
pub const MAX_CONFIG_RETRIES: u32 = 100;

/// Resets the device and waits until it reads back 0 (§2.4.2: "The driver SHOULD consider a
/// driver-initiated reset complete when it reads device status as 0").
pub fn reset<T: Transport + ?Sized>(transport: &mut T) -> Result<()> {
    transport.set_status(0);
    for _ in 0..MAX_RETRIES {
        if transport.status() == 0 {
            return Ok(());
        }
    }
    Err(Error::Timeout)
}

/// Runs the initialisation sequence of §3.1.1 (or §3.1.2 for a legacy device) and returns the
/// negotiated features:
/// reset, ACKNOWLEDGE, DRIVER, read features, write the accepted subset, FEATURES_OK and
/// re-read it, `setup` (queues, per-device configuration), DRIVER_OK. Any error sets FAILED.
///
/// `supported` is what the driver understands; VERSION_1 is always accepted when offered.
/// A device that does not offer VERSION_1 is driven through the legacy sequence, which only a
/// legacy transport allows.
pub fn initialize<T: Transport + ?Sized>(
    transport: &mut T,
    supported: Features,
    setup: impl FnOnce(&mut T, Features) -> Result<()>,
) -> Result<Features> {
    let result = negotiate_and_setup(transport, supported, setup);
    if result.is_err() {
        // §3.1.1: "If any of these steps go irrecoverably wrong, the driver SHOULD set the
        // FAILED status bit to indicate that it has given up on the device".
        let current = transport.status();
        transport.set_status(current | status::FAILED);
    }
    result
}

fn negotiate_and_setup<T: Transport + ?Sized>(
    transport: &mut T,
    supported: Features,
    setup: impl FnOnce(&mut T, Features) -> Result<()>,
) -> Result<Features> {
    // Steps 1-3: reset, ACKNOWLEDGE, DRIVER.
    reset(transport)?;
    transport.set_status(status::ACKNOWLEDGE);
    transport.set_status(status::ACKNOWLEDGE | status::DRIVER);
    // Step 4: read the offered features and accept the subset this driver understands.
    let offered = transport.device_features();
    let legacy = !offered.has(bits::VERSION_1);
    if legacy && !transport.is_legacy() {
        // §6.2: "A device MUST offer VIRTIO_F_VERSION_1" on a modern interface.
        return Err(Error::FeaturesRejected);
    }
    let mut accepted = offered.intersect(supported);
    if !legacy {
        accepted = accepted.with(bits::VERSION_1);
    } else {
        // Legacy devices have 32 feature bits (§6.3) and no packed rings.
        accepted = Features(accepted.0 & 0xffff_ffff);
    }
    transport.set_driver_features(accepted);
    let mut current = status::ACKNOWLEDGE | status::DRIVER;
    if !legacy {
        // Steps 5-6: FEATURES_OK, then re-read it: a device that cleared it refused the subset.
        current |= status::FEATURES_OK;
        transport.set_status(current);
        if transport.status() & status::FEATURES_OK == 0 {
            return Err(Error::FeaturesRejected);
        }
    }
    // Step 7: device-specific setup, including virtqueues.
    setup(transport, accepted)?;
    // Step 8: DRIVER_OK; the device is live.
    current |= status::DRIVER_OK;
    transport.set_status(current);
    if transport.status() & (status::DEVICE_NEEDS_RESET | status::FAILED) != 0 {
        return Err(Error::DeviceNeedsReset);
    }
    Ok(accepted)
}

/// Reads `out.len()` bytes of configuration space from `offset` consistently: the read is
/// repeated until the configuration generation is the same before and after (§2.5.1), or, on a
/// legacy transport without a generation counter, until two successive reads agree (§2.5.4).
pub fn read_config<T: Transport + ?Sized>(
    transport: &mut T,
    offset: usize,
    out: &mut [u8],
) -> Result<()> {
    let legacy = transport.is_legacy();
    for _ in 0..MAX_CONFIG_RETRIES {
        let before = transport.config_generation();
        read_config_once(transport, offset, out)?;
        let after = transport.config_generation();
        if before != after {
            continue;
        }
        if !legacy {
            return Ok(());
        }
        let mut again = [0u8; 64];
        let mut stable = true;
        for (chunk_index, chunk) in out.chunks(again.len()).enumerate() {
            let check = &mut again[..chunk.len()];
            read_config_once(transport, offset + chunk_index * 64, check)?;
            stable &= check == chunk;
        }
        if stable {
            return Ok(());
        }
    }
    Err(Error::ConfigUnstable)
}

fn read_config_once<T: Transport + ?Sized>(
    transport: &mut T,
    offset: usize,
    out: &mut [u8],
) -> Result<()> {
    let mut done = 0;
    while done < out.len() {
        let at = offset + done;
        let rest = out.len() - done;
        // §2.5.1: fields are read with accesses of their natural width.
        if rest >= 4 && at % 4 == 0 {
            out[done..done + 4].copy_from_slice(&transport.read_config_u32(at)?.to_le_bytes());
            done += 4;
        } else if rest >= 2 && at % 2 == 0 {
            out[done..done + 2].copy_from_slice(&transport.read_config_u16(at)?.to_le_bytes());
            done += 2;
        } else {
            out[done] = transport.read_config_u8(at)?;
            done += 1;
        }
    }
    Ok(())
}

/// Checks that a split queue at `addresses` has the legacy layout (§2.7.2): page-aligned
/// descriptor table, available ring straight after it, used ring on the next `align` boundary.
/// Returns the page frame number of the descriptor table.
pub(crate) fn legacy_queue_pfn(size: u16, addresses: &QueueAddresses, align: u64) -> Result<u32> {
    let n = u64::from(size);
    let avail = addresses.desc + 16 * n;
    let used = (avail + 6 + 2 * n).next_multiple_of(align);
    if addresses.desc % 4096 != 0 || addresses.driver != avail || addresses.device != used {
        return Err(Error::LegacyLayout);
    }
    u32::try_from(addresses.desc / 4096).map_err(|_| Error::LegacyLayout)
}

/// One of two transports, chosen at run time: an I/O server whose device may be a PCI
/// function or a virtio-mmio transport (aarch64's virt machine has both) drives either
/// through this one type.
#[derive(Debug)]
pub enum EitherTransport<A, B> {
    First(A),
    Second(B),
}

macro_rules! either {
    ($self:ident, $t:ident => $call:expr) => {
        match $self {
            EitherTransport::First($t) => $call,
            EitherTransport::Second($t) => $call,
        }
    };
}

impl<A: Transport, B: Transport> Transport for EitherTransport<A, B> {
    fn device_type(&self) -> u32 {
        either!(self, t => t.device_type())
    }
    fn is_legacy(&self) -> bool {
        either!(self, t => t.is_legacy())
    }
    fn device_features(&mut self) -> Features {
        either!(self, t => t.device_features())
    }
    fn set_driver_features(&mut self, features: Features) {
        either!(self, t => t.set_driver_features(features))
    }
    fn status(&mut self) -> u8 {
        either!(self, t => t.status())
    }
    fn set_status(&mut self, status: u8) {
        either!(self, t => t.set_status(status))
    }
    fn max_queue_size(&mut self, queue: u16) -> Result<u16> {
        either!(self, t => t.max_queue_size(queue))
    }
    fn enable_queue(&mut self, queue: u16, size: u16, addresses: QueueAddresses) -> Result<()> {
        either!(self, t => t.enable_queue(queue, size, addresses))
    }
    fn notify(&mut self, queue: u16) -> Result<()> {
        either!(self, t => t.notify(queue))
    }
    fn ack_interrupt(&mut self) -> InterruptStatus {
        either!(self, t => t.ack_interrupt())
    }
    fn config_generation(&mut self) -> u32 {
        either!(self, t => t.config_generation())
    }
    fn read_config_u8(&mut self, offset: usize) -> Result<u8> {
        either!(self, t => t.read_config_u8(offset))
    }
    fn read_config_u16(&mut self, offset: usize) -> Result<u16> {
        either!(self, t => t.read_config_u16(offset))
    }
    fn read_config_u32(&mut self, offset: usize) -> Result<u32> {
        either!(self, t => t.read_config_u32(offset))
    }
    fn write_config_u8(&mut self, offset: usize, value: u8) -> Result<()> {
        either!(self, t => t.write_config_u8(offset, value))
    }
    fn write_config_u16(&mut self, offset: usize, value: u16) -> Result<()> {
        either!(self, t => t.write_config_u16(offset, value))
    }
    fn write_config_u32(&mut self, offset: usize, value: u32) -> Result<()> {
        either!(self, t => t.write_config_u32(offset, value))
    }
}
