//! Devices granted by the system image: set up once at boot (PCI functions found and their
//! BARs sized, registers mapped into the owner only, I/O ports opened in the owner's bitmap,
//! interrupt lines and MSI-X vectors routed), then served through the device system calls.
//! A device interrupt becomes a notification bit of its owner; a line stays masked from
//! delivery until the owner acknowledges it with `irq_ack`. See docs/devices.md.

use abi::{DeviceInfo, DeviceWindow, SysError, Sysno, WindowKind};
use kcore::image::{Cache, DeviceRecord, MAX_DEVICE_IRQS, PCI_INTX, SystemImage};
use kcore::mem::PAGE_SIZE;
use kcore::pci::{self, Bar, Capabilities, MsixLayout, Refused};

use super::ipc::{wake, write_out};
use super::{Blocked, Exec, MAX_PARTITIONS, Partition};
use crate::arch;
use crate::arch::DeviceMemory;
use crate::arch::irq::IrqSource;
use crate::arch::pci::Bdf;
use crate::uaccess::{UserSlice, check, copy_out};

/// Most devices an image may grant.
pub const MAX_DEVICES: usize = 16;
/// Largest memory BAR the kernel maps into a partition.
const MAX_BAR_MAPPING: u64 = 64 << 20;

/// A PCI function as the kernel found it.
struct PciFunction {
    bdf: Bdf,
    caps: Capabilities,
}

/// An interrupt line of a device and its state.
#[derive(Clone, Copy)]
struct Line {
    irq: u32,
    /// The owner's notification bit.
    bit: u8,
    /// Masked from delivery until the owner acknowledges it.
    mask_until_ack: bool,
    /// Delivered and not yet acknowledged (masked now, if `mask_until_ack`).
    pending_ack: bool,
}

pub(super) struct Device {
    name: &'static str,
    owner: usize,
    pci: Option<PciFunction>,
    info: DeviceInfo,
    lines: [Line; MAX_DEVICE_IRQS],
    line_count: usize,
    /// MSI slots `msi_first .. msi_first + msi_count` raise bits `msi_bit ..`.
    msi_first: u16,
    msi_count: u16,
    msi_bit: u8,
}

/// MSI slots handed out so far (slots are never returned: the kernel creates nothing after
/// boot).
struct MsiAllocator(u16);

impl MsiAllocator {
    fn take(&mut self, count: u16) -> Option<u16> {
        let first = self.0;
        // The last slot must exist too (its message is the proof).
        arch::irq::msi_message(first + count.max(1) - 1)?;
        self.0 += count;
        Some(first)
    }
}

/// Sets up every device of `image` for its owner; a device that cannot be set up is left out
/// and said so at boot (its owner's `lookup` then fails).
pub(super) fn set_up(
    image: &SystemImage<'static>,
    partitions: &mut [Option<Partition>; MAX_PARTITIONS],
) -> [Option<Device>; MAX_DEVICES] {
    const NONE: Option<Device> = None;
    let mut devices = [NONE; MAX_DEVICES];
    let mut msi = MsiAllocator(0);
    for (i, slot) in devices.iter_mut().enumerate().take(image.device_count()) {
        let Ok(record) = image.device(i) else {
            continue;
        };
        let Some(owner) = partitions
            .get_mut(record.owner as usize)
            .and_then(Option::as_mut)
        else {
            continue;
        };
        match set_up_one(&record, i, owner, &mut msi) {
            Ok(device) => {
                info!(
                    "device {}: granted to {} ({} windows, interrupt bits {:#x})",
                    record.name,
                    owner.name,
                    device
                        .info
                        .windows
                        .iter()
                        .filter(|w| w.kind != WindowKind::None)
                        .count(),
                    device.info.irq_bits
                );
                *slot = Some(device);
            }
            Err(why) => error!("device {}: {why}; not granted", record.name),
        }
    }
    devices
}

fn set_up_one(
    record: &DeviceRecord<'static>,
    index: usize,
    owner: &mut Partition,
    msi: &mut MsiAllocator,
) -> Result<Device, &'static str> {
    let mut device = Device {
        name: record.name,
        owner: record.owner as usize,
        pci: None,
        info: DeviceInfo::default(),
        lines: [Line {
            irq: 0,
            bit: 0,
            mask_until_ack: false,
            pending_ack: false,
        }; MAX_DEVICE_IRQS],
        line_count: 0,
        msi_first: 0,
        msi_count: 0,
        msi_bit: 0,
    };
    let mut windows = Windows {
        next_address: abi::DEVICE_BASE + index as u64 * abi::DEVICE_SLOT_SIZE,
        end: abi::DEVICE_BASE + (index as u64 + 1) * abi::DEVICE_SLOT_SIZE,
        count: 0,
    };
    let mut msix = None;
    // The decoded BARs, once: sizing writes all ones to each BAR with decoding off.
    let mut bars = [Bar::None; 6];
    if let Some(pci_record) = record.pci {
        if !arch::pci::available() {
            return Err("PCI configuration space is not reachable on this architecture yet");
        }
        let bdf = find_function(pci_record.address, pci_record.id)
            .ok_or("no PCI function at the given address with the given id")?;
        arch::pci::assign_bars(bdf);
        let caps = Capabilities::read(|at| arch::pci::read(bdf, at, 1) as u8);
        device.info.is_pci = true;
        device.info.pci_address = bdf;
        device.info.vendor_id = arch::pci::read(bdf, 0, 2) as u16;
        device.info.device_id = arch::pci::read(bdf, 2, 2) as u16;
        msix = caps.find(pci::CAP_MSIX).map(|c| {
            let at = u16::from(c.offset);
            MsixLayout::decode(
                arch::pci::read(bdf, at + 2, 2) as u16,
                arch::pci::read(bdf, at + 4, 4),
                arch::pci::read(bdf, at + 8, 4),
            )
        });
        bars = size_bars(bdf);
        let mut command = arch::pci::read(bdf, pci::COMMAND, 2) as u16;
        for (bar, decoded) in bars.iter().enumerate() {
            match *decoded {
                Bar::None => {}
                // No port I/O on this architecture: the function is used through its memory
                // BARs (a transitional virtio device's I/O BAR is its legacy interface).
                Bar::Io { .. } if !arch::pci::PORT_IO => {}
                Bar::Io { base, size } => {
                    if !owner.space.grant_io_ports(base, size) {
                        return Err("an I/O BAR's ports cannot be granted");
                    }
                    windows.push(
                        &mut device.info,
                        DeviceWindow {
                            kind: WindowKind::IoBar,
                            index: bar as u8,
                            port: base,
                            address: 0,
                            size: u64::from(size),
                        },
                    )?;
                    command |= pci::COMMAND_IO;
                }
                Bar::Memory { base, size, .. } => {
                    let memory = DeviceMemory::new(base, size)
                        .filter(|_| size <= MAX_BAR_MAPPING && base.is_multiple_of(PAGE_SIZE));
                    let Some(memory) = memory else {
                        warn!(
                            "device {}: BAR {bar} ({} KiB, unassigned, in RAM, sub-page or too large) left unmapped",
                            record.name,
                            size / 1024
                        );
                        continue;
                    };
                    let size = memory.size();
                    let address = windows.reserve(size)?;
                    for offset in (0..size).step_by(PAGE_SIZE as usize) {
                        if msix.is_some_and(|m: MsixLayout| m.covers_page(bar as u8, offset)) {
                            continue;
                        }
                        owner
                            .space
                            .map_device(address + offset, &memory, offset, true, Cache::Device)
                            .map_err(|_| "a BAR page cannot be mapped")?;
                    }
                    windows.push(
                        &mut device.info,
                        DeviceWindow {
                            kind: WindowKind::MemoryBar,
                            index: bar as u8,
                            port: 0,
                            address,
                            size,
                        },
                    )?;
                    command |= pci::COMMAND_MEMORY;
                }
            }
        }
        // Decoding on; bus mastering is the driver's to enable when its rings are ready.
        arch::pci::write(bdf, pci::COMMAND, 2, u32::from(command));
        device.pci = Some(PciFunction { bdf, caps });
    }
    for (k, m) in record.mmio.iter().enumerate().take(record.mmio_count) {
        let size = u64::from(m.size);
        let memory =
            DeviceMemory::new(m.base, size).ok_or("an MMIO range lies in RAM or the first MiB")?;
        // The registers themselves (the grant is whole pages) must be a device the firmware's
        // device tree describes, where there is one.
        let registers = m.base + u64::from(m.offset);
        if !arch::dt::mmio_described(registers, registers + 1) {
            return Err("no device in the device tree at its MMIO address");
        }
        let address = windows.reserve(size)?;
        for offset in (0..size).step_by(PAGE_SIZE as usize) {
            owner
                .space
                .map_device(address + offset, &memory, offset, true, m.cache)
                .map_err(|_| "an MMIO page cannot be mapped")?;
        }
        // The window starts at the device's registers, which need not start the page.
        windows.push(
            &mut device.info,
            DeviceWindow {
                kind: WindowKind::Mmio,
                index: k as u8,
                port: 0,
                address: address + u64::from(m.offset),
                size: size - u64::from(m.offset),
            },
        )?;
    }
    for (k, &(base, count)) in record.io_ports.iter().enumerate().take(record.io_count) {
        if !owner.space.grant_io_ports(base, count) {
            return Err("its I/O ports are the kernel's or cannot be granted here");
        }
        windows.push(
            &mut device.info,
            DeviceWindow {
                kind: WindowKind::IoPorts,
                index: k as u8,
                port: base,
                address: 0,
                size: u64::from(count),
            },
        )?;
    }
    let mut bit = record.irq_bit;
    for &irq in record.irqs.iter().take(record.irq_count) {
        let (irq, level) = if irq == PCI_INTX {
            let bdf = device
                .pci
                .as_ref()
                .ok_or("INTx of a device that is not PCI")?
                .bdf;
            let line = arch::pci::intx_irq(bdf).ok_or("the function has no routed INTx line")?;
            (line, true)
        } else {
            (irq, device.pci.is_some() || arch::irq::PLATFORM_LINES_LEVEL)
        };
        if !arch::irq::route_line(irq, level) {
            return Err("an interrupt line does not exist on this machine");
        }
        arch::irq::set_line_masked(irq, false);
        device.lines[device.line_count] = Line {
            irq,
            bit,
            mask_until_ack: arch::irq::line_needs_mask(level),
            pending_ack: false,
        };
        device.line_count += 1;
        device.info.irq_bits |= 1 << bit;
        bit += 1;
    }
    if record.msix > 0 {
        let pci_function = device
            .pci
            .as_ref()
            .ok_or("MSI-X on a device that is not PCI")?;
        let layout = msix.ok_or("MSI-X requested, but the function has no MSI-X capability")?;
        let count = record.msix.min(layout.table_size);
        let first = msi.take(count).ok_or("out of MSI vectors")?;
        let (table_bar, table_offset, _) = layout.table;
        let Bar::Memory { base, size, .. } = bars[table_bar as usize % 6] else {
            return Err("the MSI-X table's BAR is not a memory BAR");
        };
        let table = DeviceMemory::new(base, size).ok_or("the MSI-X table's BAR lies in RAM")?;
        for k in 0..count {
            if !arch::irq::program_msix(&table, u64::from(table_offset), k, first + k) {
                return Err("the MSI-X table cannot be programmed on this machine");
            }
        }
        let control_at = u16::from(
            pci_function
                .caps
                .find(pci::CAP_MSIX)
                .expect("layout came from it")
                .offset,
        ) + 2;
        let control = arch::pci::read(pci_function.bdf, control_at, 2);
        // Enable (bit 15), function mask (bit 14) clear (PCI 3.0 §6.8.2.3).
        arch::pci::write(
            pci_function.bdf,
            control_at,
            2,
            (control | 1 << 15) & !(1 << 14),
        );
        device.msi_first = first;
        device.msi_count = count;
        device.msi_bit = bit;
        device.info.msix_vectors = count;
        for k in 0..count {
            device.info.irq_bits |= 1 << (bit + k as u8);
        }
    }
    Ok(device)
}

/// Hands out the addresses of a device's windows in its slot, a guard page after each.
struct Windows {
    next_address: u64,
    end: u64,
    count: usize,
}

impl Windows {
    fn reserve(&mut self, size: u64) -> Result<u64, &'static str> {
        let address = self.next_address;
        let next = address + size + PAGE_SIZE;
        if next > self.end {
            return Err("its windows do not fit its address slot");
        }
        self.next_address = next;
        Ok(address)
    }

    fn push(&mut self, info: &mut DeviceInfo, window: DeviceWindow) -> Result<(), &'static str> {
        let slot = info
            .windows
            .get_mut(self.count)
            .ok_or("more register windows than a device may report")?;
        *slot = window;
        self.count += 1;
        Ok(())
    }
}

/// The function at `address` (checked against `id` when both are given), or the first with
/// `id` on the first buses.
fn find_function(address: Option<(u8, u8, u8)>, id: Option<(u16, u16)>) -> Option<Bdf> {
    let matches = |bdf: Bdf| {
        let vendor = arch::pci::read(bdf, 0, 2) as u16;
        let device = arch::pci::read(bdf, 2, 2) as u16;
        vendor != 0xffff && id.is_none_or(|(v, d)| (v, d) == (vendor, device))
    };
    if let Some((bus, dev, func)) = address {
        let bdf = u16::from(bus) << 8 | u16::from(dev & 31) << 3 | u16::from(func & 7);
        return matches(bdf).then_some(bdf);
    }
    // Only by id: QEMU's machines put their devices on the first buses; a bounded scan.
    (0..8u16 << 8).find(|&bdf| matches(bdf))
}

/// Sizes the six BARs of a type-0 function (decoding off while they hold all ones).
fn size_bars(bdf: Bdf) -> [Bar; 6] {
    let command = arch::pci::read(bdf, pci::COMMAND, 2);
    arch::pci::write(
        bdf,
        pci::COMMAND,
        2,
        command & !u32::from(pci::COMMAND_IO | pci::COMMAND_MEMORY),
    );
    let probe = |at: u16| {
        let value = arch::pci::read(bdf, at, 4);
        arch::pci::write(bdf, at, 4, u32::MAX);
        let mask = arch::pci::read(bdf, at, 4);
        arch::pci::write(bdf, at, 4, value);
        (value, mask)
    };
    let mut bars = [Bar::None; 6];
    let mut index = 0;
    while index < 6 {
        let at = pci::BAR0 + 4 * index as u16;
        let (low, low_mask) = probe(at);
        let is_64bit = low & 1 == 0 && (low >> 1) & 3 == 2;
        let (high, high_mask) = if is_64bit && index < 5 {
            probe(at + 4)
        } else {
            (0, 0)
        };
        bars[index] = pci::decode_bar(low, low_mask, high, high_mask);
        index += if is_64bit { 2 } else { 1 };
    }
    arch::pci::write(bdf, pci::COMMAND, 2, command);
    bars
}

/// The notification bits partition `partition`'s devices raise.
pub(super) fn irq_bits_of(exec: &Exec, partition: usize) -> u64 {
    exec.devices
        .iter()
        .flatten()
        .filter(|d| d.owner == partition)
        .fold(0, |bits, d| bits | d.info.irq_bits)
}

/// The device `index` if `caller` owns it.
fn owned(exec: &Exec, caller: usize, index: usize) -> Result<&Device, SysError> {
    let device = exec
        .devices
        .get(index)
        .and_then(Option::as_ref)
        .ok_or(SysError::BadArgument)?;
    if device.owner != caller {
        return Err(SysError::NotGranted);
    }
    Ok(device)
}

/// The index of the device called `name`, and whether `caller` owns it.
pub(super) fn find(exec: &Exec, caller: usize, name: &str) -> Option<(usize, bool)> {
    exec.devices
        .iter()
        .position(|d| d.as_ref().is_some_and(|d| d.name == name))
        .map(|i| {
            (
                i,
                exec.devices[i].as_ref().is_some_and(|d| d.owner == caller),
            )
        })
}

/// The device system calls and `partition_config`.
pub(super) fn syscall(
    exec: &mut Exec,
    caller: usize,
    call: Sysno,
    a: [usize; 5],
) -> Result<usize, SysError> {
    match call {
        Sysno::DeviceInfo => {
            let info = owned(exec, caller, a[0])?.info;
            write_out(exec, caller, a[1], a[2], &info.to_bytes())
        }
        Sysno::PciConfigRead => {
            let function = pci_of(exec, caller, a[0])?;
            let (offset, width) = shape(a[1], a[2])?;
            pci::check_read(offset, width).map_err(refused)?;
            let value = arch::pci::read(function.bdf, offset, width);
            Ok(hide_addresses(offset, width, value) as usize)
        }
        Sysno::PciConfigWrite => {
            let function = pci_of(exec, caller, a[0])?;
            let (offset, width) = shape(a[1], a[2])?;
            let value = u32::try_from(a[3]).map_err(|_| SysError::BadArgument)?;
            let bdf = function.bdf;
            let write = pci::check_write(&function.caps, offset, width, value, || {
                arch::pci::read(bdf, pci::COMMAND, 2) as u16
            })
            .map_err(refused)?;
            arch::pci::write(bdf, write.offset, write.width, write.value);
            Ok(0)
        }
        Sysno::IrqAck => {
            let bits = a[1] as u64;
            let device = exec
                .devices
                .get_mut(a[0])
                .and_then(Option::as_mut)
                .ok_or(SysError::BadArgument)?;
            if device.owner != caller {
                return Err(SysError::NotGranted);
            }
            if bits & !device.info.irq_bits != 0 {
                return Err(SysError::BadArgument);
            }
            for line in device.lines[..device.line_count].iter_mut() {
                if bits & (1 << line.bit) != 0 && line.pending_ack {
                    line.pending_ack = false;
                    if line.mask_until_ack {
                        arch::irq::set_line_masked(line.irq, false);
                    }
                }
            }
            Ok(0)
        }
        Sysno::PartitionConfig => {
            let p = exec.partitions[caller].as_ref().expect("the caller exists");
            let config = p.config;
            // The whole buffer named must be the caller's and writable, however much of it the
            // text fills.
            let buf = UserSlice::new(a[0], a[1]);
            check(&p.space, buf, true)?;
            let take = config.len().min(a[1]);
            copy_out(&p.space, UserSlice::new(a[0], take), &config[..take])?;
            Ok(config.len())
        }
        _ => Err(SysError::UnknownSyscall),
    }
}

/// The PCI function behind device `index`, if `caller` owns it and it is one.
fn pci_of(exec: &Exec, caller: usize, index: usize) -> Result<&PciFunction, SysError> {
    owned(exec, caller, index)?
        .pci
        .as_ref()
        .ok_or(SysError::BadArgument)
}

/// Offset and width arguments, range-checked before narrowing.
fn shape(offset: usize, width: usize) -> Result<(u16, u16), SysError> {
    if offset >= usize::from(pci::CONFIG_SPACE_SIZE) || !matches!(width, 1 | 2 | 4) {
        return Err(SysError::BadArgument);
    }
    Ok((offset as u16, width as u16))
}

fn refused(r: Refused) -> SysError {
    match r {
        Refused::BadAccess => SysError::BadArgument,
        Refused::KernelOwned => SysError::NotGranted,
    }
}

/// BARs and the ROM base read with their address bits zeroed: a partition learns physical
/// addresses of DMA regions it owns and of nothing else (DeviceInfo gives it the windows).
fn hide_addresses(offset: u16, width: u16, value: u32) -> u32 {
    let dword = offset & !3;
    // The type bits stay readable: a BAR's low four (I/O or memory, 64-bit, prefetchable) and
    // the ROM base's enable bit.
    let visible: u32 = match dword {
        d if (pci::BAR0..pci::BAR0 + 24).contains(&d) => 0xf,
        0x30 => 0x1,
        _ => return value,
    };
    let shift = 8 * u32::from(offset & 3);
    let width_mask = if width == 4 {
        u32::MAX
    } else {
        (1 << (8 * width)) - 1
    };
    value & (visible >> shift) & width_mask
}

/// A device interrupt: raise its owner's bit (masking a line until acknowledged) and wake the
/// owner if it waits for it.
pub fn on_device_irq(exec: &mut Exec, source: IrqSource) -> bool {
    let mut raised = None;
    for device in exec.devices.iter_mut().flatten() {
        match source {
            IrqSource::Line(irq) => {
                if let Some(line) = device.lines[..device.line_count]
                    .iter_mut()
                    .find(|l| l.irq == irq)
                {
                    if line.mask_until_ack {
                        arch::irq::set_line_masked(irq, true);
                    }
                    line.pending_ack = true;
                    raised = Some((device.owner, line.bit));
                    break;
                }
            }
            IrqSource::Msi(slot) => {
                if (device.msi_first..device.msi_first + device.msi_count).contains(&slot) {
                    let bit = device.msi_bit + (slot - device.msi_first) as u8;
                    raised = Some((device.owner, bit));
                    break;
                }
            }
        }
    }
    let Some((owner, bit)) = raised else {
        return false;
    };
    let Some(p) = exec.partitions[owner].as_mut() else {
        return false;
    };
    p.notifications |= 1 << bit;
    if let Blocked::Wait { mask } = p.blocked
        && p.notifications & mask != 0
    {
        let bits = p.notifications & mask;
        p.notifications &= !bits;
        wake(exec, owner, Ok(bits as usize));
        return true;
    }
    false
}

/// Partition `index` restarted: its lines are open again and nothing is owed an ack, so the
/// new instance starts like the first.
pub(super) fn on_restart(exec: &mut Exec, index: usize) {
    for device in exec.devices.iter_mut().flatten() {
        if device.owner != index {
            continue;
        }
        for line in device.lines[..device.line_count].iter_mut() {
            if line.pending_ack && line.mask_until_ack {
                arch::irq::set_line_masked(line.irq, false);
            }
            line.pending_ack = false;
        }
    }
}
