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

/// A QEMU user-networking host forward: `proto` traffic to `127.0.0.1:host_port` reaches
/// `guest_ip:guest_port` inside the emulated network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    /// `"udp"` or `"tcp"`.
    pub proto: &'static str,
    pub host_port: u16,
    pub guest_ip: String,
    pub guest_port: u16,
    /// The client partition that owns `guest_ip`.
    pub partition: String,
}

/// How host ports for forwards are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostPorts {
    /// The guest port plus `BULKHEAD_HOSTFWD_OFFSET` (default 10000) when that port is free,
    /// else a free ephemeral port: stable ports for people, printed at boot.
    Preferred,
    /// Always a free ephemeral port: for tests running next to other builds.
    Ephemeral,
}

/// QEMU arguments for the devices of `system` on `arch`, block devices on `disk`; the host
/// forwards of its NICs are printed.
pub fn qemu_args(system: &System, arch: Arch, disk: Disk<'_>) -> Result<Vec<String>> {
    let (args, forwards) = qemu_setup(system, arch, disk, HostPorts::Preferred)?;
    for f in &forwards {
        println!(
            "xtask: host {} port {} -> {}:{} ({})",
            f.proto, f.host_port, f.guest_ip, f.guest_port, f.partition
        );
    }
    Ok(args)
}

/// The forwards for a virtio-net device owned by partition `owner`: each client of a channel
/// the owner serves with a `mac` gets its `ip`'s `udp-port` and `tcp-port` (from the client
/// partition's own config, the keys demo-net reads) forwarded from the host.
fn forwards_for(system: &System, owner: usize, ports: HostPorts) -> Result<Vec<Forward>> {
    let mut out = Vec::new();
    for channel in system
        .channels
        .iter()
        .filter(|c| c.server.0 == owner && c.config.contains_key("mac"))
    {
        let client = &system.partitions[channel.client.0];
        let Some(ip) = client.config.get("ip").and_then(|v| v.as_str()) else {
            continue;
        };
        let ip = ip.split('/').next().unwrap_or(ip).to_string();
        for (proto, key) in [("udp", "udp-port"), ("tcp", "tcp-port")] {
            let Some(port) = client.config.get(key).and_then(|v| v.as_integer()) else {
                continue;
            };
            let guest_port = u16::try_from(port)
                .with_context(|| format!("{}: {key} {port} is not a port", client.name))?;
            out.push(Forward {
                proto,
                host_port: host_port(proto, guest_port, ports, &out)?,
                guest_ip: ip.clone(),
                guest_port,
                partition: client.name.clone(),
            });
        }
    }
    Ok(out)
}

/// Whether `proto` port `port` on 127.0.0.1 is free now.
fn port_free(proto: &str, port: u16) -> bool {
    match proto {
        "udp" => std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok(),
        _ => std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
    }
}

fn host_port(proto: &str, guest_port: u16, ports: HostPorts, taken: &[Forward]) -> Result<u16> {
    if ports == HostPorts::Preferred {
        let offset: u32 = std::env::var("BULKHEAD_HOSTFWD_OFFSET")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000);
        if let Ok(port) = u16::try_from(u32::from(guest_port) + offset)
            && port >= 1024
            && !taken
                .iter()
                .any(|f| f.proto == proto && f.host_port == port)
            && port_free(proto, port)
        {
            return Ok(port);
        }
    }
    // The kernel picks a free port; it is released for QEMU to take right after.
    let port = match proto {
        "udp" => std::net::UdpSocket::bind(("127.0.0.1", 0))?
            .local_addr()?
            .port(),
        _ => std::net::TcpListener::bind(("127.0.0.1", 0))?
            .local_addr()?
            .port(),
    };
    Ok(port)
}

/// QEMU arguments for the devices of `system` on `arch`, and the host forwards of its NICs.
pub fn qemu_setup(
    system: &System,
    arch: Arch,
    disk: Disk<'_>,
    ports: HostPorts,
) -> Result<(Vec<String>, Vec<Forward>)> {
    let target = match arch {
        Arch::X86_64 => sysdesc::Arch::X86_64,
        Arch::Aarch64 => sysdesc::Arch::Aarch64,
    };
    let mut args = Vec::new();
    let mut forwards = Vec::new();
    let mut disks = 0;
    for device in &system.devices {
        let (Some(owner), Some(res)) = (device.owner, device.on(target)) else {
            continue;
        };
        let kind = device.kind.as_deref().unwrap_or("");
        let pci_addr = res
            .pci
            .and_then(|p| p.address)
            .map(|a| format!(",addr={:#x}.{}", a.device, a.function))
            .unwrap_or_default();
        let id = &device.name;
        // A PCI function where the description gives one (x86_64; aarch64's PCIe host), else a
        // virtio-mmio transport (aarch64).
        let on_pci = res.pci.is_some() || arch == Arch::X86_64;
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
                args.push(if on_pci {
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
                args.push(if on_pci {
                    format!(
                        "virtio-serial-pci,id={id}{pci_addr},max_ports={max_ports},\
                         disable-legacy=off,disable-modern=off"
                    )
                } else {
                    format!("virtio-serial-device,id={id},max_ports={max_ports}")
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
                args.push(if on_pci {
                    format!(
                        "virtio-rng-pci,rng={id}-source{pci_addr},\
                         disable-legacy=off,disable-modern=off"
                    )
                } else {
                    format!("virtio-rng-device,rng={id}-source")
                });
            }
            "virtio-net" => {
                // QEMU user networking (slirp): the guest network is 10.0.2.0/24, the gateway
                // 10.0.2.2; host forwards reach the clients' addresses.
                let fwd = forwards_for(system, owner.0, ports)?;
                let rules: String = fwd
                    .iter()
                    .map(|f| {
                        format!(
                            ",hostfwd={}:127.0.0.1:{}-{}:{}",
                            f.proto, f.host_port, f.guest_ip, f.guest_port
                        )
                    })
                    .collect();
                forwards.extend(fwd);
                args.push("-netdev".into());
                args.push(format!("user,id={id}{rules}"));
                args.push("-device".into());
                args.push(if on_pci {
                    format!(
                        "virtio-net-pci,netdev={id}{pci_addr},disable-legacy=off,disable-modern=off"
                    )
                } else {
                    format!("virtio-net-device,netdev={id}")
                });
            }
            "serial" if arch == Arch::X86_64 => {
                // COM1 is the kernel's console; a granted serial port is a further one.
                args.extend(["-serial".into(), "null".into()]);
            }
            _ => {}
        }
    }
    Ok((args, forwards))
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
