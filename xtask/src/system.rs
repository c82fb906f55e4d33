//! From a system description to a system image: validate, build every program, lay out.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use kcore::image::builder::{PartitionSpec, Tables, build, build_with_ipc};
use kcore::image::{
    Cache, ChannelRecord, DeviceRecord, DmaRecord, HealthPolicy, MAX_DEVICE_IO, MAX_DEVICE_IRQS,
    MAX_DEVICE_MMIO, MAX_REGION_MAPPINGS, MmioRecord, NotificationRecord, PciRecord, RegionRecord,
    WindowRecord,
};
use sysdesc::{Programs, System};

use crate::{Arch, build as cargo_build};

/// Names of the programs that can be built: the packages of crates with a `src/main.rs` under
/// partitions/ and servers/ (a server's folder is named for its device class, `servers/blk`,
/// its package for what it is, `virtio-blk-server`).
pub fn available_programs() -> Vec<String> {
    sysdesc::schema::program_dirs(&cargo_build::root())
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

/// The programs with their configuration schemas (`config-schema.toml` next to each
/// program's `Cargo.toml`); a broken schema file is printed with file, line and column.
pub fn programs() -> Result<Programs> {
    Programs::discover(&cargo_build::root()).map_err(|reports| {
        for report in &reports {
            report.eprint();
        }
        anyhow::anyhow!("{} configuration schema(s) are invalid", reports.len())
    })
}

/// Resolves `name` (a file, or a name in systems/) to a description path.
pub fn description_path(name: &str) -> PathBuf {
    let given = Path::new(name);
    if given.exists() {
        return given.to_path_buf();
    }
    cargo_build::root()
        .join("systems")
        .join(format!("{name}.toml"))
}

/// Loads and validates a description; errors are printed with file, line and column.
pub fn load(path: &Path) -> Result<System> {
    match sysdesc::load(path, &programs()?) {
        Ok(system) => Ok(system),
        Err(report) => {
            report.eprint();
            bail!(
                "{} is not a valid system description; no image was built",
                path.display()
            )
        }
    }
}

/// Builds a partition program for `arch` and returns its ELF path. Programs are linked at the
/// fixed user address with the runtime's linker script, without position independence, in a
/// target directory of their own so their flags never invalidate the kernel's build.
pub fn build_program(name: &str, arch: Arch) -> Result<PathBuf> {
    let root = cargo_build::root();
    let script = root.join("partitions/runtime/link.ld");
    let flags = format!(
        "-C relocation-model=static -C strip=debuginfo -C link-arg=-T{}",
        script.display()
    );
    let target_dir = root.join("target/partitions");
    let status = cargo_build::cargo()
        .current_dir(&root)
        .env("RUSTFLAGS", flags)
        .env("CARGO_TARGET_DIR", &target_dir)
        .args(["build", "--quiet", "--release", "--package", name])
        .args(partition_target_args(arch))
        .status()
        .context("running cargo build for a partition")?;
    if !status.success() {
        bail!("building program {name} for {} failed", arch.name());
    }
    Ok(target_dir
        .join(partition_target(arch))
        .join("release")
        .join(name))
}

/// Partitions use targets without floating point on both architectures (x86_64-unknown-none
/// has no SSE, aarch64-unknown-none-softfloat no FP/SIMD): the kernel saves no FP state on a
/// switch, and on aarch64 it leaves FP/SIMD trapped (CPACR_EL1.FPEN), so an FP instruction in a
/// partition is that partition's fault rather than a leak of another partition's registers.
fn partition_target(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "x86_64-unknown-none",
        Arch::Aarch64 => "aarch64-unknown-none-softfloat",
    }
}

fn partition_target_args(arch: Arch) -> Vec<&'static str> {
    let mut args = vec!["--target", partition_target(arch)];
    if arch == Arch::Aarch64 {
        args.extend([
            "-Zbuild-std=core,alloc",
            "-Zbuild-std-features=compiler-builtins-mem",
        ]);
    }
    args
}

/// Builds the system image for `system` on `arch` with kernel command line `cmdline`.
pub fn image(system: &System, arch: Arch, cmdline: &str) -> Result<Vec<u8>> {
    let mut specs = Vec::new();
    for (index, p) in system.partitions.iter().enumerate() {
        let elf = build_program(&p.program, arch)?;
        let elf = fs::read(&elf).with_context(|| format!("reading {}", elf.display()))?;
        let main = p
            .threads
            .first()
            .context("a partition has at least one thread")?;
        specs.push(PartitionSpec {
            name: p.name.clone(),
            elf,
            memory_bytes: p.memory,
            stack_bytes: u32::try_from(main.stack).context("stack size")?,
            priority: main.priority,
            policy: match p.health {
                sysdesc::HealthPolicy::Stop => HealthPolicy::Stop,
                sysdesc::HealthPolicy::Halt => HealthPolicy::Halt,
                sysdesc::HealthPolicy::Restart {
                    max_restarts,
                    period_ns,
                } => HealthPolicy::Restart {
                    max_restarts,
                    period_ns,
                },
            },
            background: p.background
                || system
                    .schedule
                    .background
                    .iter()
                    .any(|b| system.partitions[b.0].name == p.name),
            config: config_records(system, index),
        });
    }
    let windows: Vec<WindowRecord> = system
        .schedule
        .windows
        .iter()
        .map(|w| WindowRecord {
            partition: w.partition.0 as u32,
            offset_ns: w.offset_ns,
            length_ns: w.length_ns,
        })
        .collect();
    let channels: Vec<ChannelRecord> = system
        .channels
        .iter()
        .map(|c| ChannelRecord {
            name: &c.name,
            client: c.client.0 as u16,
            server: c.server.0 as u16,
            message_size: c.message_size,
        })
        .collect();
    let notifications: Vec<NotificationRecord> = system
        .notifications
        .iter()
        .map(|n| NotificationRecord {
            name: &n.name,
            receiver: n.receiver.0 as u16,
            bit: n.bit,
            senders: n.senders.iter().fold(0u64, |mask, s| mask | 1 << s.0),
        })
        .collect();
    let mut regions = Vec::new();
    for r in &system.shared_regions {
        if r.mappings.len() > MAX_REGION_MAPPINGS {
            bail!(
                "shared region {} is mapped into more than {MAX_REGION_MAPPINGS} partitions",
                r.name
            );
        }
        let mut mappings = [(0u16, false); MAX_REGION_MAPPINGS];
        for (slot, m) in mappings.iter_mut().zip(&r.mappings) {
            *slot = (m.partition.0 as u16, m.access == sysdesc::Access::ReadWrite);
        }
        regions.push(RegionRecord {
            name: &r.name,
            size: r.size,
            mappings,
            mapping_count: r.mappings.len(),
            cache: cache(r.cache),
            dma_owner: r.dma_owner.map(|p| p.0 as u16),
        });
    }
    let dma: Vec<DmaRecord> = system
        .partitions
        .iter()
        .enumerate()
        .flat_map(|(owner, p)| {
            p.dma.iter().map(move |d| DmaRecord {
                name: &d.name,
                owner: owner as u16,
                size: d.size,
            })
        })
        .collect();
    let devices = device_records(system, arch)?;
    let tables = Tables {
        channels: &channels,
        notifications: &notifications,
        regions: &regions,
        dma: &dma,
        devices: &devices,
    };
    Ok(build_with_ipc(
        cmdline,
        system.schedule.major_frame_ns,
        &specs,
        &windows,
        &tables,
    ))
}

fn cache(c: sysdesc::CacheAttr) -> Cache {
    match c {
        sysdesc::CacheAttr::WriteBack => Cache::WriteBack,
        sysdesc::CacheAttr::WriteCombining => Cache::WriteCombining,
        sysdesc::CacheAttr::Uncached => Cache::Uncached,
        sysdesc::CacheAttr::Device => Cache::Device,
    }
}

/// The configuration partition `index` reads with `partition_config`, in the typed encoding
/// of `bulkhead_rt::config`: its own settings, then for each channel it serves a channel
/// record and that channel's settings. The description was checked against the program's
/// schema, so every setting is there with its default filled in; a nested table (only possible
/// for a program without a schema) becomes dotted keys.
pub fn config_records(system: &System, index: usize) -> Vec<u8> {
    const CHANNEL: u8 = 0;
    const INT: u8 = 1;
    const BOOL: u8 = 2;
    const STR: u8 = 3;
    fn record(out: &mut Vec<u8>, tag: u8, key: &str, value: &[u8]) {
        let key_len = u8::try_from(key.len()).expect("setting names are short");
        let value_len = u16::try_from(value.len()).expect("setting values are short");
        out.extend_from_slice(&[tag, key_len]);
        out.extend_from_slice(&value_len.to_le_bytes());
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(value);
    }
    fn settings(out: &mut Vec<u8>, prefix: &str, table: &sysdesc::toml::Table) {
        use sysdesc::toml::Value;
        for (key, value) in table {
            let key = format!("{prefix}{key}");
            match value {
                Value::Integer(i) => record(out, INT, &key, &i.to_le_bytes()),
                Value::Boolean(b) => record(out, BOOL, &key, &[u8::from(*b)]),
                Value::String(s) => record(out, STR, &key, s.as_bytes()),
                Value::Table(inner) => settings(out, &format!("{key}."), inner),
                // Only settings of programs without a schema can be floats, dates or arrays.
                other => record(out, STR, &key, other.to_string().as_bytes()),
            }
        }
    }
    let mut out = b"BHC\x01".to_vec();
    settings(&mut out, "", &system.partitions[index].config);
    for c in system.channels.iter().filter(|c| c.server.0 == index) {
        record(&mut out, CHANNEL, &c.name, &[]);
        settings(&mut out, "", &c.config);
    }
    out
}

/// The devices that exist on `arch` and have an owner, with their interrupts given the owner's
/// notification bits after those its declared notifications use. MMIO ranges are granted in
/// whole pages, so two owners' ranges may not share a page.
fn device_records(system: &System, arch: Arch) -> Result<Vec<DeviceRecord<'_>>> {
    let target = match arch {
        Arch::X86_64 => sysdesc::Arch::X86_64,
        Arch::Aarch64 => sysdesc::Arch::Aarch64,
    };
    let mut next_bit: Vec<usize> = system
        .partitions
        .iter()
        .enumerate()
        .map(|(i, _)| {
            system
                .notifications
                .iter()
                .filter(|n| n.receiver.0 == i)
                .map(|n| n.bit as usize + 1)
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut pages: Vec<(u64, u64, usize, &str)> = Vec::new();
    let mut records = Vec::new();
    for d in &system.devices {
        let (Some(owner), Some(res)) = (d.owner, d.on(target)) else {
            continue;
        };
        if res.mmio.len() > MAX_DEVICE_MMIO
            || res.io_ports.len() > MAX_DEVICE_IO
            || res.irqs.len() > MAX_DEVICE_IRQS
        {
            bail!(
                "device {}: at most {MAX_DEVICE_MMIO} MMIO ranges, {MAX_DEVICE_IO} I/O port \
                 ranges and {MAX_DEVICE_IRQS} interrupts are supported",
                d.name
            );
        }
        let mut r = DeviceRecord {
            name: &d.name,
            owner: owner.0 as u16,
            pci: res.pci.map(|pci| PciRecord {
                address: pci.address.map(|a| (a.bus, a.device, a.function)),
                id: pci.id.map(|id| (id.vendor, id.device)),
            }),
            mmio_count: res.mmio.len(),
            io_count: res.io_ports.len(),
            irq_count: res.irqs.len(),
            msix: res.msi,
            irq_bit: next_bit[owner.0] as u8,
            ..DeviceRecord::default()
        };
        for (slot, m) in r.mmio.iter_mut().zip(&res.mmio) {
            let first = m.base & !0xfff;
            let end = (m.base + m.size).next_multiple_of(4096);
            if let Some(other) = pages
                .iter()
                .find(|(s, e, o, _)| *o != owner.0 && first < *e && *s < end)
            {
                bail!(
                    "device {}: its MMIO range {:#x}+{:#x} shares a page with device {}, \
                     which another partition owns",
                    d.name,
                    m.base,
                    m.size,
                    other.3
                );
            }
            pages.push((first, end, owner.0, &d.name));
            *slot = MmioRecord {
                base: first,
                size: u32::try_from(end - first)
                    .with_context(|| format!("device {}: MMIO range too large", d.name))?,
                cache: cache(m.cache),
                offset: (m.base - first) as u16,
            };
        }
        for (slot, io) in r.io_ports.iter_mut().zip(&res.io_ports) {
            *slot = (io.base, io.count);
        }
        for (slot, irq) in r.irqs.iter_mut().zip(&res.irqs) {
            *slot = *irq;
        }
        if r.pci.is_some() && r.irq_count == 0 && r.msix == 0 {
            // Neither lines nor MSI-X given: the function's INTx pin, routed as the firmware
            // set it up (the kernel reads the interrupt-line register).
            r.irqs[0] = kcore::image::PCI_INTX;
            r.irq_count = 1;
        }
        next_bit[owner.0] += r.irq_bit_count();
        if next_bit[owner.0] > 64 {
            bail!(
                "partition {}: its notifications and device interrupts need more than 64 bits",
                system.partitions[owner.0].name
            );
        }
        records.push(r);
    }
    Ok(records)
}

/// A system image with no partitions, only a command line (the kernel's self-tests).
pub fn empty_image(cmdline: &str) -> Vec<u8> {
    build(cmdline, 1, &[], &[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_rt::config::{self as rt_config, Config, Value};
    use sysdesc::toml;

    /// Every shipped system's configurations decode, with the runtime's reader, to exactly
    /// the settings sysdesc resolved (defaults included), and fit the smallest buffer a
    /// program reads them into (1 KiB).
    #[test]
    fn every_system_configuration_round_trips_through_the_runtime_reader() {
        let programs = programs().unwrap();
        let dir = cargo_build::root().join("systems");
        let mut checked = 0;
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let system = sysdesc::load(&path, &programs).unwrap();
            for (index, p) in system.partitions.iter().enumerate() {
                let bytes = config_records(&system, index);
                assert!(bytes.len() <= 1024, "{}: {}", path.display(), p.name);
                let config = Config::from_bytes(&bytes).unwrap();
                let same = |value: Option<Value<'_>>, expected: &toml::Value| match expected {
                    toml::Value::Integer(i) => value == Some(Value::Int(*i)),
                    toml::Value::Boolean(b) => value == Some(Value::Bool(*b)),
                    toml::Value::String(s) => value == Some(Value::Str(s)),
                    _ => false,
                };
                for (key, expected) in &p.config {
                    assert!(same(config.value(key), expected), "{}: {key}", p.name);
                    checked += 1;
                }
                assert_eq!(
                    config.entries().count(),
                    p.config.len()
                        + system
                            .channels
                            .iter()
                            .filter(|c| c.server.0 == index)
                            .map(|c| c.config.len())
                            .sum::<usize>()
                );
                let served: Vec<&str> = system
                    .channels
                    .iter()
                    .filter(|c| c.server.0 == index)
                    .map(|c| c.name.as_str())
                    .collect();
                assert_eq!(config.channels().collect::<Vec<_>>(), served);
                for c in system.channels.iter().filter(|c| c.server.0 == index) {
                    for (key, expected) in &c.config {
                        assert!(
                            same(config.channel_value(&c.name, key), expected),
                            "{}",
                            c.name
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 100, "{checked}");
    }

    #[test]
    fn a_partition_without_settings_gets_an_empty_configuration() {
        let system = sysdesc::load(&description_path("hello"), &programs().unwrap()).unwrap();
        let bytes = config_records(&system, 0);
        assert_eq!(bytes, b"BHC\x01");
        assert_eq!(bytes[..4], rt_config::MAGIC);
        assert_eq!(Config::from_bytes(&bytes).unwrap().entries().count(), 0);
    }
}
