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
            "virtio-console" => {
                // A multiport console: one port per client channel of the owner whose config
                // names a `port`, each backed by its own host chardev (a Unix socket QEMU
                // serves, see `console_socket`). Port 0 can only be a `virtconsole`.
                let ports = console_ports(system, device.owner);
                let max_ports = ports.iter().map(|(_, p)| p + 1).max().unwrap_or(1).max(2);
                args.push("-device".into());
                args.push(match arch {
                    Arch::X86_64 => format!(
                        "virtio-serial-pci,id={id}{pci_addr},max_ports={max_ports},\
                         disable-legacy=off,disable-modern=off"
                    ),
                    Arch::Aarch64 => format!("virtio-serial-device,id={id},max_ports={max_ports}"),
                });
                for (channel, port) in ports {
                    let path = console_socket(&system.name, &channel)?;
                    args.push("-chardev".into());
                    args.push(format!(
                        "socket,id={id}-{channel},path={},server=on,wait=off",
                        path.display()
                    ));
                    let kind = if port == 0 {
                        "virtconsole"
                    } else {
                        "virtserialport"
                    };
                    args.push("-device".into());
                    args.push(format!(
                        "{kind},bus={id}.0,chardev={id}-{channel},nr={port},name={channel}"
                    ));
                }
            }
            "virtio-rng" => {
                args.push("-object".into());
                args.push(format!("rng-random,id={id}-source,filename=/dev/urandom"));
                args.push("-device".into());
                args.push(match arch {
                    Arch::X86_64 => format!(
                        "virtio-rng-pci,rng={id}-source{pci_addr},\
                         disable-legacy=off,disable-modern=off"
                    ),
                    Arch::Aarch64 => format!("virtio-rng-device,rng={id}-source"),
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

/// The console ports of the channels `owner` serves: (channel, `port` from its config).
fn console_ports(
    system: &System,
    owner: Option<sysdesc::model::PartitionId>,
) -> Vec<(String, u32)> {
    system
        .channels
        .iter()
        .filter(|c| Some(c.server) == owner)
        .filter_map(|c| {
            let port = c.config.get("port")?.as_integer()?;
            Some((c.name.clone(), u32::try_from(port).ok()?))
        })
        .collect()
}

/// target/console/SYSTEM-CHANNEL.sock: the host end of a client's console (a Unix socket QEMU
/// listens on; `socat - UNIX-CONNECT:PATH` talks to it). A stale socket is removed.
pub fn console_socket(system: &str, channel: &str) -> Result<PathBuf> {
    let dir = build::root().join("target/console");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{system}-{channel}.sock"));
    let _ = fs::remove_file(&path);
    Ok(path)
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
