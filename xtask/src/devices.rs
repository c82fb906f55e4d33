//! The QEMU devices a system description needs: each device a partition owns becomes the
//! QEMU device that emulates it, at the address the description gives, so that `cargo xtask
//! run` boots any description without hand-written QEMU arguments.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sysdesc::System;

use crate::{Arch, build};

/// Size of a disk image made when none is given: room for the demo's virtual disks.
const DEFAULT_DISK_BYTES: u64 = 64 << 20;

/// Where block devices get their disk image.
#[derive(Clone, Copy, Debug)]
pub enum Disk<'a> {
    /// This image file.
    Given(&'a Path),
    /// target/disks/SYSTEM-DEVICE.img, made zero-filled the first time and kept after.
    Kept,
    /// The same file, zero-filled anew for this boot (tests start from a blank disk).
    Fresh,
}

/// QEMU arguments for the devices of `system` on `arch`.
pub fn qemu_args(system: &System, arch: Arch, disk: Disk<'_>) -> Result<Vec<String>> {
    let target = match arch {
        Arch::X86_64 => sysdesc::Arch::X86_64,
        Arch::Aarch64 => sysdesc::Arch::Aarch64,
    };
    let mut args = Vec::new();
    let mut disks = 0;
    for device in &system.devices {
        let (Some(_), Some(res)) = (device.owner, device.on(target)) else {
            continue;
        };
        let kind = device.kind.as_deref().unwrap_or("");
        let pci_addr = res
            .pci
            .and_then(|p| p.address)
            .map(|a| format!(",addr={:#x}.{}", a.device, a.function))
            .unwrap_or_default();
        let id = &device.name;
        match kind {
            "virtio-blk" => {
                if disks > 0 && matches!(disk, Disk::Given(_)) {
                    bail!("one --disk image given, but the system has several block devices");
                }
                disks += 1;
                let path = match disk {
                    Disk::Given(path) => path.to_path_buf(),
                    Disk::Kept => default_disk(&system.name, id, false)?,
                    Disk::Fresh => default_disk(&system.name, id, true)?,
                };
                args.push("-drive".into());
                args.push(format!(
                    "if=none,id={id},file={},format=raw,cache=writeback",
                    path.display()
                ));
                args.push("-device".into());
                // A PCI function where the description gives one (x86_64; aarch64's PCIe host),
                // else a virtio-mmio transport (aarch64).
                args.push(if res.pci.is_some() || arch == Arch::X86_64 {
                    format!(
                        "virtio-blk-pci,drive={id}{pci_addr},num-queues=1,queue-size=256,\
                         disable-legacy=off,disable-modern=off"
                    )
                } else {
                    format!("virtio-blk-device,drive={id}")
                });
            }
            "serial" if arch == Arch::X86_64 => {
                // COM1 is the kernel's console; a granted serial port is a further one.
                args.extend(["-serial".into(), "null".into()]);
            }
            _ => {}
        }
    }
    Ok(args)
}

/// target/disks/SYSTEM-DEVICE.img, created zero-filled if it does not exist or `fresh`.
fn default_disk(system: &str, device: &str, fresh: bool) -> Result<PathBuf> {
    let dir = build::root().join("target/disks");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{system}-{device}.img"));
    if fresh || !path.exists() {
        let file = fs::File::create(&path)
            .with_context(|| format!("creating disk image {}", path.display()))?;
        file.set_len(DEFAULT_DISK_BYTES)
            .with_context(|| format!("sizing disk image {}", path.display()))?;
    }
    Ok(path)
}
