//! The x86_64 body of the program (see main.rs).

use abi::{ObjectKind, SysError, WindowKind};
use rt::port::PortWindow;
use rt::println;
use rt::syscall::{
    device_info, irq_ack, log_write, lookup, pci_config_read, pci_config_write, raw_syscall5,
};

fn check(what: &str, ok: bool) {
    if ok {
        println!("ok: {what}");
    } else {
        println!("FAIL: {what}");
    }
}

pub fn main() {
    let dev = lookup(ObjectKind::Device, "disk0").expect("disk0 is granted");
    check(
        "another partition's device is not granted",
        lookup(ObjectKind::Device, "com2") == Err(SysError::NotGranted),
    );
    let info = device_info(dev).expect("device_info");
    println!(
        "disk0: PCI {:02x}:{:02x}.{} {:04x}:{:04x}, MSI-X vectors {}, interrupt bits {:#x}",
        info.pci_address >> 8,
        (info.pci_address >> 3) & 31,
        info.pci_address & 7,
        info.vendor_id,
        info.device_id,
        info.msix_vectors,
        info.irq_bits
    );
    for w in info.windows.iter().filter(|w| w.kind != WindowKind::None) {
        println!(
            "disk0: window {:?} {} at {:#x} port {:#x} size {:#x}",
            w.kind, w.index, w.address, w.port, w.size
        );
    }

    // Configuration space, mediated.
    check(
        "vendor id reads 0x1af4",
        pci_config_read(dev, 0, 2) == Ok(0x1af4),
    );
    check(
        "BAR0 reads its type bits only (I/O)",
        pci_config_read(dev, 0x10, 4) == Ok(1),
    );
    check(
        "writing a BAR is refused",
        pci_config_write(dev, 0x10, 4, 0) == Err(SysError::NotGranted),
    );
    check(
        "writing the interrupt line is refused",
        pci_config_write(dev, 0x3c, 1, 5) == Err(SysError::NotGranted),
    );
    check(
        "a misaligned read is refused",
        pci_config_read(dev, 0x11, 2) == Err(SysError::BadArgument),
    );
    check(
        "a read past 256 bytes is refused",
        pci_config_read(dev, 0x100, 4) == Err(SysError::BadArgument),
    );
    check(
        "a 3-byte read is refused",
        pci_config_read(dev, 0x10, 3) == Err(SysError::BadArgument),
    );
    let msix_control = find_capability(dev, 0x11).map(|at| at + 2);
    check(
        "writing MSI-X message control is refused",
        msix_control.is_some_and(|at| pci_config_write(dev, at, 2, 0) == Err(SysError::NotGranted)),
    );
    let command = pci_config_read(dev, 4, 2).unwrap_or(0);
    check(
        "bus mastering can be enabled",
        pci_config_write(dev, 4, 2, command | 4).is_ok()
            && pci_config_read(dev, 4, 2).is_ok_and(|c| c & 4 != 0),
    );

    // The legacy interface through the I/O BAR: device features (VirtIO 1.2 §4.1.4.10).
    let io = info.io_bar(0).expect("an I/O BAR 0");
    // SAFETY: the kernel reported these ports as disk0's I/O BAR, granted to this partition.
    let ports = unsafe { PortWindow::new(io.port, io.size as u16) }.expect("a port window");
    let legacy_features = ports.read_u32(0);
    check(
        "the legacy I/O BAR answers (device features read)",
        legacy_features != 0 && legacy_features != u32::MAX,
    );

    // The modern interface through a memory BAR: VERSION_1 (feature bit 32).
    let version_1 = modern_version_1(dev, &info);
    check(
        "the modern memory BAR answers (VERSION_1 offered)",
        version_1,
    );

    // Past the grant.
    let bar4 = info.memory_bar(4).expect("memory BAR 4");
    // SAFETY: a raw log_write naming device registers: the kernel must refuse to read them.
    let logged = raw_syscall5(0, [bar4.address as usize, 16, 0, 0, 0]);
    check(
        "the kernel will not read device registers for the partition",
        SysError::decode(logged) == Err(SysError::BadPointer),
    );
    let _ = log_write;
    check(
        "device_info of an unknown device is refused",
        device_info(99) == Err(SysError::BadArgument),
    );
    let com2 = (0..16).find(|&d| device_info(d) == Err(SysError::NotGranted));
    check(
        "device_info of another partition's device is refused",
        com2.is_some(),
    );
    check(
        "acking interrupt bits that are not the device's is refused",
        irq_ack(dev, !info.irq_bits) == Err(SysError::BadArgument),
    );
    check(
        "config access to another partition's device is refused",
        com2.is_some_and(|d| pci_config_read(d, 0, 2) == Err(SysError::NotGranted)),
    );

    let table = info
        .windows
        .iter()
        .find(|w| w.kind == WindowKind::MemoryBar && w.index == 1)
        .expect("memory BAR 1 (the MSI-X table)");
    println!("reading the MSI-X table page at {:#x}", table.address);
    // SAFETY: deliberately touching an address the kernel leaves unmapped: the fault is the
    // test's expected outcome.
    let value = unsafe { core::ptr::read_volatile(table.address as *const u32) };
    println!("FAIL: the MSI-X table was readable ({value:#x})");
}

/// The configuration-space offset of the first capability with `id`.
fn find_capability(dev: usize, id: u32) -> Option<u16> {
    let mut at = pci_config_read(dev, 0x34, 1).ok()? as u16 & 0xfc;
    for _ in 0..48 {
        if at < 0x40 {
            return None;
        }
        if pci_config_read(dev, at, 1).ok()? == id {
            return Some(at);
        }
        at = pci_config_read(dev, at + 1, 1).ok()? as u16 & 0xfc;
    }
    None
}

/// Finds the virtio common configuration (vendor capability of cfg_type 1) and reads whether
/// the device offers VIRTIO_F_VERSION_1 (VirtIO 1.2 §4.1.4.3).
fn modern_version_1(dev: usize, info: &abi::DeviceInfo) -> bool {
    let mut at = pci_config_read(dev, 0x34, 1).unwrap_or(0) as u16 & 0xfc;
    for _ in 0..48 {
        if at < 0x40 {
            return false;
        }
        let id = pci_config_read(dev, at, 1).unwrap_or(0);
        let cfg_type = pci_config_read(dev, at + 3, 1).unwrap_or(0);
        if id == 0x09 && cfg_type == 1 {
            let bar = pci_config_read(dev, at + 4, 1).unwrap_or(0xff) as u8;
            let offset = pci_config_read(dev, at + 8, 4).unwrap_or(0) as u64;
            let Some(window) = info.memory_bar(bar) else {
                return false;
            };
            let common = (window.address + offset) as *mut u32;
            // SAFETY: the common configuration lies in a memory BAR the kernel mapped for this
            // partition; device_feature_select (offset 0) and device_feature (offset 4) are
            // 32-bit registers.
            unsafe {
                core::ptr::write_volatile(common, 1);
                return core::ptr::read_volatile(common.add(1)) & 1 != 0;
            }
        }
        at = pci_config_read(dev, at + 1, 1).unwrap_or(0) as u16 & 0xfc;
    }
    false
}
