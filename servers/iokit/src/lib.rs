//! What every I/O server partition needs to reach its granted virtio device and its clients:
//! the device's registers (memory BAR windows, the legacy I/O BAR where there is port I/O, or
//! a virtio-mmio window), its PCI configuration space through the kernel, the transport (a
//! PCI function on either architecture, or virtio-mmio), routing a queue's MSI-X vector, and
//! each client channel's shared region and interrupt notification named by the convention of
//! docs/io-servers.md. Used by the block, network, console and entropy servers.
#![no_std]

pub mod serve;

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

/// PCI configuration space of a granted function, through the kernel's mediation.
pub struct PciConfig(pub usize);

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

/// The transport to the real device: a PCI function (modern over memory BARs, or legacy over
/// the I/O BAR where there is port I/O) or a virtio-mmio transport.
pub type DeviceTransport = virtio::transport::EitherTransport<
    virtio::transport::pci::PciTransport<Regs>,
    virtio::transport::mmio::MmioTransport<Regs>,
>;

/// Where to write a queue's MSI-X vector after the queue is enabled (the library leaves it at
/// NO_VECTOR): the register window and the offsets of queue select and queue vector.
pub struct VectorRoute {
    regs: Regs,
    select: usize,
    vector: usize,
}

impl VectorRoute {
    /// Points `queue`'s interrupt at MSI-X vector 0; true if the device took it.
    pub fn route(&mut self, queue: u16) -> bool {
        self.regs.write_u16(self.select, queue);
        self.regs.write_u16(self.vector, 0);
        self.regs.read_u16(self.vector) == 0
    }
}

/// The legacy interface's I/O BAR 0 as a register window.
#[cfg(target_arch = "x86_64")]
fn legacy_io(info: &DeviceInfo) -> virtio::Result<Regs> {
    let bar = info.io_bar(0).ok_or(virtio::Error::NoDevice)?;
    // SAFETY: the kernel granted these ports of our own device in the I/O bitmap.
    let ports = unsafe { rt::port::PortWindow::new(bar.port, bar.size as u16) };
    ports.map(Regs::Port).ok_or(virtio::Error::NoDevice)
}

/// No port I/O here: only the modern interface.
#[cfg(not(target_arch = "x86_64"))]
fn legacy_io(_info: &DeviceInfo) -> virtio::Result<Regs> {
    Err(virtio::Error::NoDevice)
}

/// Opens device `device` (described by `info`): a PCI function through its modern interface
/// (or the legacy one where the function has no capabilities and there is port I/O), or a
/// virtio-mmio transport (version 1 or 2). Returns the transport, how to route a queue's
/// MSI-X vector (when the kernel enabled MSI-X), and a word on which interface it is.
pub fn open_device(
    device: usize,
    info: &DeviceInfo,
) -> virtio::Result<(DeviceTransport, Option<VectorRoute>, &'static str)> {
    use virtio::transport::EitherTransport;
    use virtio::transport::pci::{PciTransport, VirtioPciCapabilities, common, legacy};
    if !info.is_pci {
        let window = info
            .windows
            .iter()
            .find(|w| w.kind == abi::WindowKind::Mmio)
            .ok_or(virtio::Error::NoDevice)?;
        let regs = mmio_window(window, 0, window.size)?;
        let transport = virtio::transport::mmio::MmioTransport::new(regs)?;
        let kind = if transport.version() == 1 {
            "virtio-mmio version 1 (legacy)"
        } else {
            "virtio-mmio version 2"
        };
        return Ok((EitherTransport::Second(transport), None, kind));
    }
    let msix = info.msix_vectors > 0;
    let mut config = PciConfig(device);
    let map = |w: &virtio::transport::pci::CapabilityWindow| {
        let bar = info.memory_bar(w.bar).ok_or(virtio::Error::NoDevice)?;
        mmio_window(bar, u64::from(w.offset), u64::from(w.length))
    };
    let transport = PciTransport::probe(&mut config, map, || legacy_io(info), msix)?;
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
            (msix.then_some(route), "PCI modern (memory BARs)")
        }
        PciTransport::Legacy(_) => {
            let route = legacy_io(info).map(|regs| VectorRoute {
                regs,
                select: legacy::QUEUE_SELECT,
                // §4.1.4.10: with MSI-X enabled, the queue vector follows the config vector.
                vector: legacy::CONFIG + 2,
            });
            (route.ok().filter(|_| msix), "PCI legacy (I/O BAR)")
        }
    };
    Ok((EitherTransport::First(transport), route, kind))
}

/// A client channel's shared region (mapped read-write) and its `C-irq` notification, named
/// as docs/io-servers.md says (overridable with `channels.C.region` / `channels.C.irq`); `None`
/// (said in the log) when either is missing or the region is not writable. The third value is
/// the region's physical address if the description makes this server its DMA owner, else 0.
pub fn client_channel(
    config: &rt::config::Config<'_>,
    channel: &str,
) -> Option<(virtio::dma::DmaRegion<'static>, ClientNotifier, u64)> {
    use abi::ObjectKind;
    use rt::println;
    use rt::syscall::{lookup, region_info};
    let region_name = config.channel_need(channel, "region")?;
    let irq_name = config.channel_need(channel, "irq")?;
    let region = lookup(ObjectKind::SharedRegion, region_name).and_then(region_info);
    let irq = lookup(ObjectKind::Notification, irq_name);
    let (Ok(region), Ok(irq)) = (region, irq) else {
        println!(
            "{channel}: shared region {region_name} or notification {irq_name} missing: {region:?} {irq:?}"
        );
        return None;
    };
    if !region.writable {
        println!("{channel}: shared region {region_name} is not writable here");
        return None;
    }
    // SAFETY: the kernel mapped the shared region at `address` for this partition and the
    // client for the partition's whole life; it is only accessed through DmaRegion views
    // (volatile and atomic accesses), and everything read from it is treated as untrusted.
    let memory =
        unsafe { virtio::dma::DmaRegion::new(region.address as *mut u8, region.size as usize, 0) }
            .ok()?;
    Some((memory, ClientNotifier { irq }, region.phys))
}

/// How long a client's wait for its server lasts before it counts as a miss.
const CLIENT_WAIT_NS: u64 = 50_000_000;
/// Sleep between a client's polls of its notification word while it waits.
const CLIENT_POLL_NS: u64 = 1_000_000;

/// A client's side of a channel's notifications: kicks the server through `C-kick`; waits for
/// `C-irq` by polling the notification word with short sleeps, so that a server that is gone
/// costs a bounded wait (the driver then reports a timeout) rather than a hang.
#[derive(Clone, Debug)]
pub struct KernelNotifier {
    pub kick: usize,
    /// The notification bits to wait on (the channel's `C-irq` bit, or all).
    pub mask: u64,
}

impl Notifier for KernelNotifier {
    fn notify_peer(&mut self) {
        let _ = rt::syscall::notify(self.kick);
    }
    fn take_pending(&mut self) -> bool {
        rt::syscall::poll(self.mask).is_ok_and(|bits| bits != 0)
    }
    fn wait(&mut self) -> bool {
        let deadline = rt::syscall::time_now_ns() + CLIENT_WAIT_NS;
        loop {
            if self.take_pending() {
                return true;
            }
            let now = rt::syscall::time_now_ns();
            if now >= deadline {
                return false;
            }
            rt::syscall::sleep_until(now + CLIENT_POLL_NS);
        }
    }
}

/// A client's channel from its own configuration: `channel`, its shared region (`region`)
/// and kick notification (`kick`), whose defaults (the channel's name, `C-kick`) its schema
/// gives, waiting on `irq-mask` (absent: every bit). Returns the channel's name, its
/// memory and its notifier; `None` (said in the log) when the region or the kick is not
/// granted.
pub fn client_attach<'c>(
    config: &rt::config::Config<'c>,
) -> Option<(&'c str, virtio::dma::DmaRegion<'static>, KernelNotifier)> {
    use abi::ObjectKind;
    use rt::syscall::{lookup, region_info};
    let channel = config.need("channel")?;
    // Absent: every bit (the schema's word for it).
    let mask = config.get_u64("irq-mask").unwrap_or(u64::MAX);
    let kick_name = config.need("kick")?;
    let region_name = config.need("region")?;
    let region = lookup(ObjectKind::SharedRegion, region_name).and_then(region_info);
    let kick = lookup(ObjectKind::Notification, kick_name);
    let (Ok(region), Ok(kick)) = (region, kick) else {
        rt::println!(
            "{channel}: shared region {region_name} or notification {kick_name} not granted: {region:?} {kick:?}"
        );
        return None;
    };
    // SAFETY: the kernel mapped the shared region at `address` for this partition and the
    // server for the partition's whole life; it is accessed only through DmaRegion views
    // (volatile and atomic accesses), and the library treats its contents as untrusted.
    let memory =
        unsafe { virtio::dma::DmaRegion::new(region.address as *mut u8, region.size as usize, 0) }
            .ok()?;
    Some((channel, memory, KernelNotifier { kick, mask }))
}

/// A server's granted device by name: its index and what the kernel reports of it; `None`
/// (said in the log) when it is not granted.
pub fn granted_device(name: &str) -> Option<(usize, abi::DeviceInfo)> {
    let Ok(device) = rt::syscall::lookup(abi::ObjectKind::Device, name) else {
        rt::println!("device {name} is not granted to this partition; stopping");
        return None;
    };
    match rt::syscall::device_info(device) {
        Ok(info) => Some((device, info)),
        Err(e) => {
            rt::println!("device_info({name}): {e:?}; stopping");
            None
        }
    }
}

/// A server's DMA region by name, with the physical address the device sees for its first
/// byte; `None` (said in the log) when it is not granted.
pub fn dma_region(name: &str) -> Option<virtio::dma::DmaRegion<'static>> {
    let dma = match rt::syscall::lookup(abi::ObjectKind::DmaRegion, name)
        .and_then(rt::syscall::dma_info)
    {
        Ok(dma) => dma,
        Err(e) => {
            rt::println!("DMA region {name}: {e:?}; stopping");
            return None;
        }
    };
    // SAFETY: the kernel mapped the DMA region at `address` for this partition alone, for its
    // whole life, physically contiguous from `phys`; only the device and DmaRegion views
    // access it.
    let region =
        unsafe { virtio::dma::DmaRegion::new(dma.address as *mut u8, dma.size as usize, dma.phys) };
    if region.is_err() {
        rt::println!("DMA region {name} is unusable; stopping");
    }
    region.ok()
}
