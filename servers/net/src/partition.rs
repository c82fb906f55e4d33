//! The partition: binds the portable server (`net_server`) to the kernel. It finds its NIC
//! (a device granted by the description), its DMA region, and per client channel a shared
//! region, two notifications and the client's MAC; then it switches frames in a loop,
//! sleeping in `wait` when idle.
//!
//! Names, per channel `C` the server serves (overridable with `channels.C.region`,
//! `channels.C.kick`, `channels.C.irq`): shared region `C`, notification `C-kick` (client →
//! server) and `C-irq` (server → client); `channels.C.mac` is the client's MAC (required).
//! Server-wide keys: `nic` (device name, default `net0`), `dma` (DMA region name, default
//! `packets`), `queue-depth` (largest client queue, default 64), `poll` (true: poll the NIC every
//! 200 us instead of waiting for its interrupt). See docs/io-servers.md.

use abi::{DeviceInfo, ObjectKind};
use net_server::server::{ClientState, Server};
use net_server::switch::{MAX_CLIENTS, MacDisplay, parse_mac};
use net_server::uplink::{Uplink, VirtioUplink};
use rt::config::Config;
use rt::println;
use rt::syscall::{
    device_info, dma_info, irq_ack, lookup, notify, partition_info, poll, region_info, sleep_until,
    time_now_ns, wait,
};
use virtio::dma::{DmaRegion, MmioRegisters};
use virtio::transport::RegisterAccess;
use virtio::transport::shmem::Notifier;

rt::entry!(main);

/// Ring area per client channel: two split or packed queues of up to 256 entries.
const CLIENT_RING_LEN: usize = 0x8000;
/// Ring memory per queue of the real NIC (legacy layout of 256 entries: 10.3 KiB).
const DEVICE_RING_LEN: usize = 0x4000;
/// Entries of the real NIC's queues (QEMU's virtio-net default; a legacy device's queue size
/// is fixed by the device).
const DEVICE_QUEUE: usize = 256;
/// How long to sleep between polls of the NIC when its interrupt is not routed to us.
const POLL_NS: u64 = 200_000;
/// Statistics are printed at most this often.
const REPORT_NS: u64 = 5_000_000_000;

/// Signals a client through its `C-irq` notification. The server never waits per client: its
/// loop waits on every bit at once and then looks at every channel.
struct ClientNotifier {
    irq: usize,
}

impl Notifier for ClientNotifier {
    fn notify_peer(&mut self) {
        let _ = notify(self.irq);
    }
    fn take_pending(&mut self) -> bool {
        false
    }
    fn wait(&mut self) -> bool {
        false
    }
}

/// The device's registers: a memory BAR window, or the legacy I/O BAR.
enum Regs {
    Mmio(MmioRegisters),
    #[cfg(target_arch = "x86_64")]
    Port(rt::port::PortWindow),
}

impl RegisterAccess for Regs {
    fn read_u8(&mut self, offset: usize) -> u8 {
        match self {
            Regs::Mmio(r) => r.read_u8(offset),
            #[cfg(target_arch = "x86_64")]
            Regs::Port(p) => p.read_u8(offset),
        }
    }
    fn read_u16(&mut self, offset: usize) -> u16 {
        match self {
            Regs::Mmio(r) => r.read_u16(offset),
            #[cfg(target_arch = "x86_64")]
            Regs::Port(p) => p.read_u16(offset),
        }
    }
    fn read_u32(&mut self, offset: usize) -> u32 {
        match self {
            Regs::Mmio(r) => r.read_u32(offset),
            #[cfg(target_arch = "x86_64")]
            Regs::Port(p) => p.read_u32(offset),
        }
    }
    fn write_u8(&mut self, offset: usize, value: u8) {
        match self {
            Regs::Mmio(r) => r.write_u8(offset, value),
            #[cfg(target_arch = "x86_64")]
            Regs::Port(p) => p.write_u8(offset, value),
        }
    }
    fn write_u16(&mut self, offset: usize, value: u16) {
        match self {
            Regs::Mmio(r) => r.write_u16(offset, value),
            #[cfg(target_arch = "x86_64")]
            Regs::Port(p) => p.write_u16(offset, value),
        }
    }
    fn write_u32(&mut self, offset: usize, value: u32) {
        match self {
            Regs::Mmio(r) => r.write_u32(offset, value),
            #[cfg(target_arch = "x86_64")]
            Regs::Port(p) => p.write_u32(offset, value),
        }
    }
}

/// A window of `length` bytes at `offset` into the mapped register window `window`.
fn mmio_window(window: &abi::DeviceWindow, offset: u64, length: u64) -> virtio::Result<Regs> {
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

/// The transport to the real device, and how to route its queue's interrupt.
#[cfg(target_arch = "x86_64")]
type DeviceTransport = virtio::transport::pci::PciTransport<Regs>;
#[cfg(target_arch = "aarch64")]
type DeviceTransport = virtio::transport::mmio::MmioTransport<Regs>;

/// Where to write the receive queue's MSI-X vector after the queue is enabled (the library
/// leaves it at NO_VECTOR): the register window and the offsets of queue select and queue vector.
struct VectorRoute {
    regs: Regs,
    select: usize,
    vector: usize,
}

#[cfg(target_arch = "x86_64")]
fn open_device(
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
fn open_device(
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
fn join<'b>(buf: &'b mut [u8; 64], name: &str, suffix: &str) -> &'b str {
    let name = &name.as_bytes()[..name.len().min(buf.len() - suffix.len())];
    let n = name.len() + suffix.len();
    buf[..name.len()].copy_from_slice(name);
    buf[name.len()..n].copy_from_slice(suffix.as_bytes());
    core::str::from_utf8(&buf[..n]).unwrap_or("")
}

fn main() {
    let generation = partition_info().map_or(0, |i| i.generation);
    let mut text = [0u8; 4096];
    let config = rt::config::read(&mut text).unwrap_or_else(|e| {
        println!("no configuration ({e:?}): serving no clients");
        Config::new("")
    });
    let nic_name = config.get("nic").unwrap_or("net0");
    let dma_name = config.get("dma").unwrap_or("packets");
    let queue_depth = config.get_u64("queue-depth").unwrap_or(64).clamp(1, 256) as u16;

    let Ok(device) = lookup(ObjectKind::Device, nic_name) else {
        println!("device {nic_name} is not granted to this partition; stopping");
        return;
    };
    let info = match device_info(device) {
        Ok(info) => info,
        Err(e) => {
            println!("device_info({nic_name}): {e:?}; stopping");
            return;
        }
    };
    let dma = match lookup(ObjectKind::DmaRegion, dma_name).and_then(dma_info) {
        Ok(dma) => dma,
        Err(e) => {
            println!("DMA region {dma_name}: {e:?}; stopping");
            return;
        }
    };
    // SAFETY: the kernel mapped the DMA region at `address` for this partition alone, for its
    // whole life, physically contiguous from `phys`; only the device and DmaRegion views
    // access it.
    let Ok(dma_region) =
        (unsafe { DmaRegion::new(dma.address as *mut u8, dma.size as usize, dma.phys) })
    else {
        println!("DMA region {dma_name} is unusable; stopping");
        return;
    };
    let rings = 2 * DEVICE_RING_LEN;
    let (Ok(rx_ring), Ok(tx_ring), Ok(memory)) = (
        dma_region.subregion(0, DEVICE_RING_LEN),
        dma_region.subregion(DEVICE_RING_LEN, DEVICE_RING_LEN),
        dma_region.subregion(rings, (dma.size as usize).saturating_sub(rings)),
    ) else {
        println!("DMA region {dma_name} ({} bytes) is too small", dma.size);
        return;
    };

    let (transport, route, kind) = match open_device(device, &info) {
        Ok(t) => t,
        Err(e) => {
            println!("{nic_name}: no virtio-net device ({e:?}); stopping");
            return;
        }
    };
    let mut routed = false;
    let uplink = VirtioUplink::<_, DEVICE_QUEUE>::new(transport, rx_ring, tx_ring, memory, |_| {
        // Only the receive queue interrupts: transmit buffers are reaped on every pass.
        if let Some(mut r) = route {
            r.regs.write_u16(r.select, 0);
            r.regs.write_u16(r.vector, 0);
            routed = r.regs.read_u16(r.vector) == 0;
        }
        Ok(())
    });
    let mut uplink = match uplink {
        Ok(u) => u,
        Err(e) => {
            println!("{nic_name}: initialisation failed ({e:?}); stopping");
            return;
        }
    };
    let interrupts = info.irq_bits != 0
        && (routed || info.msix_vectors == 0)
        && config.get_bool("poll") != Some(true);
    println!(
        "{nic_name}: virtio-net {kind}, MAC {}, link {}, {} packet buffers each way, interrupts {} (generation {generation})",
        MacDisplay(uplink.mac()),
        if uplink.link_up() { "up" } else { "down" },
        uplink.buffers(),
        if interrupts { "on" } else { "off (polling)" },
    );

    let mut server = Server::new(uplink);
    let mut names: [&str; MAX_CLIENTS] = [""; MAX_CLIENTS];
    for channel in config.channels() {
        let Some(mac) = config.channel_get(channel, "mac").and_then(parse_mac) else {
            println!("{channel}: no valid `mac`; not served");
            continue;
        };
        let (mut b1, mut b2) = ([0u8; 64], [0u8; 64]);
        let region_name = config.channel_get(channel, "region").unwrap_or(channel);
        let irq_name = config
            .channel_get(channel, "irq")
            .unwrap_or_else(|| join(&mut b1, channel, "-irq"));
        let _kick_name = config
            .channel_get(channel, "kick")
            .unwrap_or_else(|| join(&mut b2, channel, "-kick"));
        let region = lookup(ObjectKind::SharedRegion, region_name).and_then(region_info);
        let irq = lookup(ObjectKind::Notification, irq_name);
        let (Ok(region), Ok(irq)) = (region, irq) else {
            println!(
                "{channel}: shared region {region_name} or notification {irq_name} missing: {region:?} {irq:?}"
            );
            continue;
        };
        if !region.writable {
            println!("{channel}: shared region {region_name} is not writable here");
            continue;
        }
        // SAFETY: the kernel mapped the shared region at `address` for this partition and the
        // client for the partition's whole life; it is only accessed through DmaRegion views
        // (volatile and atomic accesses), and everything read from it is treated as untrusted.
        let Ok(memory) =
            (unsafe { DmaRegion::new(region.address as *mut u8, region.size as usize, 0) })
        else {
            continue;
        };
        match server.add_client(
            memory,
            CLIENT_RING_LEN,
            mac,
            queue_depth,
            ClientNotifier { irq },
        ) {
            Ok(index) => {
                names[index] = channel;
                println!("{channel}: virtual NIC with MAC {}", MacDisplay(mac));
            }
            Err(e) => println!("{channel}: not served: {e:?}"),
        }
    }

    let mut states = [None; MAX_CLIENTS];
    let mut last_report = time_now_ns();
    let mut reported = [Default::default(); MAX_CLIENTS];
    loop {
        while server.run_once().busy {}
        for (index, last) in states.iter_mut().enumerate() {
            let now = server.client_state(index);
            if now != *last {
                if let (Some(state), Some(_)) = (now, *last) {
                    match state {
                        ClientState::Serving => println!("{}: serving", names[index]),
                        ClientState::Idle => println!("{}: reset by the client", names[index]),
                        ClientState::Broken(why) => {
                            println!("{}: stopped until it resets: {why:?}", names[index])
                        }
                    }
                }
                *last = now;
            }
        }
        if time_now_ns() - last_report > REPORT_NS {
            last_report = time_now_ns();
            for (index, last) in reported.iter_mut().enumerate() {
                let Some(stats) = server.client_stats(index) else {
                    continue;
                };
                if stats != *last {
                    println!(
                        "{}: tx {} frames {} bytes, rx {} frames {} bytes, dropped: spoofed {} malformed {} no-buffer {}",
                        names[index],
                        stats.tx_frames,
                        stats.tx_bytes,
                        stats.rx_frames,
                        stats.rx_bytes,
                        stats.spoofed,
                        stats.malformed,
                        stats.rx_no_buffer
                    );
                    *last = stats;
                }
            }
        }
        let bits = if !interrupts {
            sleep_until(time_now_ns() + POLL_NS);
            poll(u64::MAX).unwrap_or(0)
        } else {
            // Ask the NIC for an interrupt on the next frame; every bit wakes us: client kicks
            // and the NIC's interrupts alike.
            if server.uplink().enable_interrupts() {
                continue;
            }
            match wait(u64::MAX) {
                Ok(bits) => bits,
                Err(_) => {
                    sleep_until(time_now_ns() + POLL_NS);
                    0
                }
            }
        };
        if bits & info.irq_bits != 0 {
            server.uplink().ack_interrupt();
            let _ = irq_ack(device, bits & info.irq_bits);
        }
    }
}
