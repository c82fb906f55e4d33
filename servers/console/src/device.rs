//! Reaching a granted virtio device from a server partition: its registers (memory BAR windows
//! or the legacy I/O BAR), its PCI configuration space through the kernel, the transport
//! (PCI on x86_64, virtio-mmio on aarch64), and routing a queue's MSI-X vector. Shared by the
//! console and entropy servers (`servers/rng` includes this file); the block server has its
//! own copy of the same glue.

use abi::DeviceInfo;
use virtio::dma::MmioRegisters;
use virtio::transport::RegisterAccess;
use virtio::transport::shmem::Notifier;

/// Signals a client through its `C-irq` notification; the server's loop waits on every bit.
pub struct ClientNotifier {
    pub irq: usize,
}

impl Notifier for ClientNotifier {
    fn notify_peer(&mut self) {
        let _ = rt::syscall::notify(self.irq);
    }
    fn take_pending(&mut self) -> bool {
        false
    }
    fn wait(&mut self) -> bool {
        false
    }
}

/// The device's registers: a memory BAR window, or the legacy I/O BAR.
pub enum Regs {
    Mmio(MmioRegisters),
    #[cfg(target_arch = "x86_64")]
    Port(rt::port::PortWindow),
}

macro_rules! delegate {
    ($self:ident, $r:ident => $e:expr) => {
        match $self {
            Regs::Mmio($r) => $e,
            #[cfg(target_arch = "x86_64")]
            Regs::Port($r) => $e,
        }
    };
}

impl RegisterAccess for Regs {
    fn read_u8(&mut self, offset: usize) -> u8 {
        delegate!(self, r => r.read_u8(offset))
    }
    fn read_u16(&mut self, offset: usize) -> u16 {
        delegate!(self, r => r.read_u16(offset))
    }
    fn read_u32(&mut self, offset: usize) -> u32 {
        delegate!(self, r => r.read_u32(offset))
    }
    fn write_u8(&mut self, offset: usize, value: u8) {
        delegate!(self, r => r.write_u8(offset, value))
    }
    fn write_u16(&mut self, offset: usize, value: u16) {
        delegate!(self, r => r.write_u16(offset, value))
    }
    fn write_u32(&mut self, offset: usize, value: u32) {
        delegate!(self, r => r.write_u32(offset, value))
    }
}

/// A window of `length` bytes at `offset` into the mapped register window `window`.
pub fn mmio_window(window: &abi::DeviceWindow, offset: u64, length: u64) -> virtio::Result<Regs> {
    if window.address == 0
        || offset
            .checked_add(length)
            .is_none_or(|end| end > window.size)
    {
        return Err(virtio::Error::NoDevice);
    }
    // SAFETY: the kernel mapped `window.size` bytes of this device's registers at
    // `window.address` (uncached) for this partition, for its whole life; the sub-window lies
    // inside (checked above).
    let regs =
        unsafe { MmioRegisters::new((window.address + offset) as *mut u8, length as usize) }?;
    Ok(Regs::Mmio(regs))
}

/// PCI configuration space of a granted function, through the kernel.
#[cfg(target_arch = "x86_64")]
struct PciConfig(usize);

#[cfg(target_arch = "x86_64")]
impl RegisterAccess for PciConfig {
    fn read_u8(&mut self, offset: usize) -> u8 {
        rt::syscall::pci_config_read(self.0, offset as u16, 1).map_or(u8::MAX, |v| v as u8)
    }
    fn read_u16(&mut self, offset: usize) -> u16 {
        rt::syscall::pci_config_read(self.0, offset as u16, 2).map_or(u16::MAX, |v| v as u16)
    }
    fn read_u32(&mut self, offset: usize) -> u32 {
        rt::syscall::pci_config_read(self.0, offset as u16, 4).unwrap_or(u32::MAX)
    }
    fn write_u8(&mut self, offset: usize, value: u8) {
        let _ = rt::syscall::pci_config_write(self.0, offset as u16, 1, value.into());
    }
    fn write_u16(&mut self, offset: usize, value: u16) {
        let _ = rt::syscall::pci_config_write(self.0, offset as u16, 2, value.into());
    }
    fn write_u32(&mut self, offset: usize, value: u32) {
        let _ = rt::syscall::pci_config_write(self.0, offset as u16, 4, value);
    }
}

/// The transport to the real device.
#[cfg(target_arch = "x86_64")]
pub type DeviceTransport = virtio::transport::pci::PciTransport<Regs>;
#[cfg(target_arch = "aarch64")]
pub type DeviceTransport = virtio::transport::mmio::MmioTransport<Regs>;

/// Where to write a queue's MSI-X vector after it is enabled (the library leaves it at
/// NO_VECTOR): the register window and the offsets of queue select and queue vector.
pub struct VectorRoute {
    regs: Regs,
    select: usize,
    vector: usize,
}

impl VectorRoute {
    /// Routes queue `queue` to MSI-X vector 0; whether the device took it.
    pub fn route(&mut self, queue: u16) -> bool {
        self.regs.write_u16(self.select, queue);
        self.regs.write_u16(self.vector, 0);
        self.regs.read_u16(self.vector) == 0
    }
}

/// Opens granted device `device`: its transport, how to route its queues' interrupts (with
/// MSI-X), and a word on which interface it is.
#[cfg(target_arch = "x86_64")]
pub fn open_device(
    device: usize,
    info: &DeviceInfo,
) -> virtio::Result<(DeviceTransport, Option<VectorRoute>, &'static str)> {
    use virtio::transport::pci::{PciTransport, VirtioPciCapabilities, common, legacy};
    let msix = info.msix_vectors > 0;
    let mut config = PciConfig(device);
    let map = |w: &virtio::transport::pci::CapabilityWindow| {
        let bar = info.memory_bar(w.bar).ok_or(virtio::Error::NoDevice)?;
        mmio_window(bar, u64::from(w.offset), u64::from(w.length))
    };
    let legacy_io = || {
        let bar = info.io_bar(0).ok_or(virtio::Error::NoDevice)?;
        // SAFETY: the kernel granted these ports of our own device in the I/O bitmap.
        let ports = unsafe { rt::port::PortWindow::new(bar.port, bar.size as u16) };
        ports.map(Regs::Port).ok_or(virtio::Error::NoDevice)
    };
    let transport = PciTransport::probe(&mut config, map, legacy_io, msix)?;
    let (route, kind) = match &transport {
        PciTransport::Modern(_) => {
            let caps = VirtioPciCapabilities::find(&mut config)?;
            let bar = info
                .memory_bar(caps.common.bar)
                .ok_or(virtio::Error::NoDevice)?;
            let regs = mmio_window(bar, caps.common.offset.into(), caps.common.length.into())?;
            let route = VectorRoute {
                regs,
                select: common::QUEUE_SELECT,
                vector: common::QUEUE_MSIX_VECTOR,
            };
            (msix.then_some(route), "modern (memory BARs)")
        }
        PciTransport::Legacy(_) => {
            let route = legacy_io().map(|regs| VectorRoute {
                regs,
                select: legacy::QUEUE_SELECT,
                // §4.1.4.10: with MSI-X enabled, the queue vector follows the config vector.
                vector: legacy::CONFIG + 2,
            });
            (route.ok().filter(|_| msix), "legacy (I/O BAR)")
        }
    };
    Ok((transport, route, kind))
}

#[cfg(target_arch = "aarch64")]
pub fn open_device(
    _device: usize,
    info: &DeviceInfo,
) -> virtio::Result<(DeviceTransport, Option<VectorRoute>, &'static str)> {
    let window = info
        .windows
        .iter()
        .find(|w| w.kind == abi::WindowKind::Mmio)
        .ok_or(virtio::Error::NoDevice)?;
    let regs = mmio_window(window, 0, window.size)?;
    Ok((
        virtio::transport::mmio::MmioTransport::new(regs)?,
        None,
        "virtio-mmio",
    ))
}

/// `name` followed by `suffix`, in `buf`.
pub fn join<'b>(buf: &'b mut [u8; 64], name: &str, suffix: &str) -> &'b str {
    let name = &name.as_bytes()[..name.len().min(buf.len() - suffix.len())];
    let n = name.len() + suffix.len();
    buf[..name.len()].copy_from_slice(name);
    buf[name.len()..n].copy_from_slice(suffix.as_bytes());
    core::str::from_utf8(&buf[..n]).unwrap_or("")
}

/// A client channel's shared region (mapped read-write) and its `C-irq` notification, named
/// as docs/io-servers.md says (overridable with `channels.C.region` / `channels.C.irq`).
pub fn client_channel(
    config: &rt::config::Config<'_>,
    channel: &str,
) -> Result<(virtio::dma::DmaRegion<'static>, ClientNotifier), ()> {
    use abi::ObjectKind;
    use rt::println;
    use rt::syscall::{lookup, region_info};
    let mut b = [0u8; 64];
    let region_name = config.channel_get(channel, "region").unwrap_or(channel);
    let irq_name = config
        .channel_get(channel, "irq")
        .unwrap_or_else(|| join(&mut b, channel, "-irq"));
    let region = lookup(ObjectKind::SharedRegion, region_name).and_then(region_info);
    let irq = lookup(ObjectKind::Notification, irq_name);
    let (Ok(region), Ok(irq)) = (region, irq) else {
        println!(
            "{channel}: shared region {region_name} or notification {irq_name} missing: {region:?} {irq:?}"
        );
        return Err(());
    };
    if !region.writable {
        println!("{channel}: shared region {region_name} is not writable here");
        return Err(());
    }
    // SAFETY: the kernel mapped the shared region at `address` for this partition and the
    // client for the partition's whole life; it is only accessed through DmaRegion views
    // (volatile and atomic accesses), and everything read from it is treated as untrusted.
    let memory =
        unsafe { virtio::dma::DmaRegion::new(region.address as *mut u8, region.size as usize, 0) }
            .map_err(|_| ())?;
    Ok((memory, ClientNotifier { irq }))
}
