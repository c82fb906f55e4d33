//! Semantic validation: turns the spanned raw description into a [`System`], collecting every
//! error it can find rather than stopping at the first.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;

use toml::Spanned;

use crate::diag::Pending;
use crate::model::*;
use crate::raw::*;
use crate::units::{format_duration, format_size, parse_duration, parse_size};
use crate::{MAX_MESSAGE_SIZE, MAX_NAME_LEN, MAX_PRIORITY, PAGE_SIZE, Programs};

type Span = Range<usize>;

/// Default thread stack when a thread gives none.
pub const DEFAULT_STACK: u64 = 16 * 1024;
/// Notification bits per receiving partition.
pub const NOTIFICATION_BITS: usize = 64;

pub(crate) struct Ctx {
    pub(crate) out: Vec<Pending>,
}

/// Resolved parts of the system the settings check needs.
pub(crate) struct Resolved<'a> {
    pub devices: &'a [Device],
    pub notifications: &'a [Notification],
    pub shared: &'a [SharedRegion],
}

impl Ctx {
    pub(crate) fn error(&mut self, span: Span, message: impl Into<String>) {
        self.out.push(Pending::error(span, message));
    }

    pub(crate) fn push(&mut self, pending: Pending) {
        self.out.push(pending);
    }

    /// A size (string with unit or integer of bytes).
    fn size(&mut self, q: &Quantity) -> Option<u64> {
        match q.get_ref() {
            toml::Value::Integer(i) if *i >= 0 => Some(*i as u64),
            toml::Value::Integer(_) => {
                self.error(q.span(), "a size must not be negative");
                None
            }
            toml::Value::String(s) => match parse_size(s) {
                Ok(v) => Some(v),
                Err(e) => {
                    self.error(q.span(), e);
                    None
                }
            },
            other => {
                self.error(
                    q.span(),
                    format!(
                        "expected a size such as \"64 KiB\" or an integer number of bytes, found {}",
                        other.type_str()
                    ),
                );
                None
            }
        }
    }

    /// A size that must be a positive multiple of the page size.
    fn page_size(&mut self, q: &Quantity, what: &str) -> Option<u64> {
        let v = self.size(q)?;
        if v == 0 {
            self.error(q.span(), format!("{what} must not be zero"));
            None
        } else if !v.is_multiple_of(PAGE_SIZE) {
            self.error(
                q.span(),
                format!(
                    "{what} ({}) is not a multiple of the 4 KiB page size",
                    format_size(v)
                ),
            );
            None
        } else {
            Some(v)
        }
    }

    /// A duration (string with unit) in nanoseconds.
    fn duration(&mut self, q: &Quantity) -> Option<u64> {
        match q.get_ref() {
            toml::Value::String(s) => match parse_duration(s) {
                Ok(v) => Some(v),
                Err(e) => {
                    self.error(q.span(), e);
                    None
                }
            },
            toml::Value::Integer(i) => {
                self.error(
                    q.span(),
                    format!("a duration needs a unit: write \"{i} ms\", \"{i} us\" or similar"),
                );
                None
            }
            other => {
                self.error(
                    q.span(),
                    format!(
                        "expected a duration such as \"10 ms\", found {}",
                        other.type_str()
                    ),
                );
                None
            }
        }
    }

    fn name(&mut self, name: &Name, what: &str) {
        let s = name.get_ref();
        let ok = s.len() <= MAX_NAME_LEN
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !ok {
            self.error(
                name.span(),
                format!(
                    "invalid {what} name \"{s}\": use lowercase letters, digits, '-' and '_', \
                     starting with a letter, at most {MAX_NAME_LEN} characters"
                ),
            );
        }
    }

    fn cache(&mut self, name: Option<&Name>, default: CacheAttr) -> CacheAttr {
        let Some(name) = name else { return default };
        match name.get_ref().as_str() {
            "write-back" => CacheAttr::WriteBack,
            "write-combining" => CacheAttr::WriteCombining,
            "uncached" => CacheAttr::Uncached,
            "device" => CacheAttr::Device,
            other => {
                self.error(
                    name.span(),
                    format!(
                        "unknown cache attribute \"{other}\" (expected \"write-back\", \
                         \"write-combining\", \"uncached\" or \"device\")"
                    ),
                );
                default
            }
        }
    }

    fn arch(&mut self, name: &Name) -> Option<Arch> {
        let a = Arch::from_name(name.get_ref());
        if a.is_none() {
            self.error(
                name.span(),
                format!(
                    "unknown architecture \"{}\" (expected \"x86_64\" or \"aarch64\")",
                    name.get_ref()
                ),
            );
        }
        a
    }
}

/// Partition names to indices, for resolving references.
struct Names<'a> {
    partitions: HashMap<&'a str, PartitionId>,
}

impl Names<'_> {
    fn partition(&self, ctx: &mut Ctx, name: &Name) -> Option<PartitionId> {
        let id = self.partitions.get(name.get_ref().as_str()).copied();
        if id.is_none() {
            ctx.error(
                name.span(),
                format!("unknown partition \"{}\"", name.get_ref()),
            );
        }
        id
    }
}

/// Where each resource of a device came from, for conflict reports.
struct Located<T> {
    device: DeviceId,
    span: Span,
    value: T,
}

struct ArchResources {
    arch: Arch,
    mmio: Vec<Located<MmioRange>>,
    ports: Vec<Located<IoPortRange>>,
    irqs: Vec<Located<u32>>,
    pci: Vec<Located<PciFunction>>,
}

pub(crate) fn validate(raw: &RawSystem, programs: &Programs) -> (Option<System>, Vec<Pending>) {
    let mut ctx = Ctx { out: Vec::new() };
    let system = build(&mut ctx, raw, programs);
    let ok = !ctx.out.iter().any(|p| p.severity == crate::Severity::Error);
    (system.filter(|_| ok), ctx.out)
}

fn build(ctx: &mut Ctx, raw: &RawSystem, programs: &Programs) -> Option<System> {
    // [system]
    let (name, arches) = match &raw.system {
        None => {
            ctx.error(0..0, "missing [system] table (with name and arch)");
            (String::new(), Arch::ALL.to_vec())
        }
        Some(sys) => {
            let sys = sys.get_ref();
            ctx.name(&sys.name, "system");
            let mut arches = Vec::new();
            for a in sys.arch.get_ref() {
                if let Some(arch) = ctx.arch(a) {
                    if arches.contains(&arch) {
                        ctx.error(a.span(), format!("architecture \"{arch}\" is listed twice"));
                    } else {
                        arches.push(arch);
                    }
                }
            }
            if sys.arch.get_ref().is_empty() {
                ctx.error(sys.arch.span(), "arch must name at least one architecture");
            }
            arches.sort();
            (sys.name.get_ref().clone(), arches)
        }
    };

    // [partitions.NAME]
    if raw.partitions.is_empty() {
        let span = raw.system.as_ref().map_or(0..0, |s| s.span());
        ctx.error(span, "the system declares no partitions");
    }
    let names = Names {
        partitions: raw
            .partitions
            .keys()
            .enumerate()
            .map(|(i, k)| (k.get_ref().as_str(), PartitionId(i)))
            .collect(),
    };
    let mut partitions: Vec<Partition> = raw
        .partitions
        .iter()
        .map(|(name, p)| partition(ctx, name, p.get_ref(), programs))
        .collect();

    // [devices.NAME]
    let mut devices = Vec::new();
    let mut located: Vec<ArchResources> = arches
        .iter()
        .map(|&arch| ArchResources {
            arch,
            mmio: Vec::new(),
            ports: Vec::new(),
            irqs: Vec::new(),
            pci: Vec::new(),
        })
        .collect();
    for (i, (name, d)) in raw.devices.iter().enumerate() {
        devices.push(device(
            ctx,
            DeviceId(i),
            name,
            d.get_ref(),
            &arches,
            &mut located,
        ));
    }

    // Grants: partitions' `devices` lists.
    let device_index: HashMap<&str, DeviceId> = raw
        .devices
        .keys()
        .enumerate()
        .map(|(i, k)| (k.get_ref().as_str(), DeviceId(i)))
        .collect();
    let mut granted: HashMap<DeviceId, (PartitionId, Span)> = HashMap::new();
    for (pi, (pname, p)) in raw.partitions.iter().enumerate() {
        let mut mine = HashSet::new();
        for dname in &p.get_ref().devices {
            let Some(&did) = device_index.get(dname.get_ref().as_str()) else {
                ctx.error(
                    dname.span(),
                    format!("unknown device \"{}\"", dname.get_ref()),
                );
                continue;
            };
            if !mine.insert(did) {
                ctx.error(
                    dname.span(),
                    format!(
                        "device \"{}\" is listed twice by partition \"{}\"",
                        dname.get_ref(),
                        pname.get_ref()
                    ),
                );
                continue;
            }
            if let Some((owner, first)) = granted.get(&did) {
                ctx.push(
                    Pending::error(
                        dname.span(),
                        format!(
                            "device \"{}\" is already granted to partition \"{}\"",
                            dname.get_ref(),
                            partitions[owner.0].name
                        ),
                    )
                    .note(first.clone(), "first granted here"),
                );
                continue;
            }
            granted.insert(did, (PartitionId(pi), dname.span()));
            devices[did.0].owner = Some(PartitionId(pi));
            partitions[pi].devices.push(did);
        }
    }
    for (p, (name, raw_p)) in partitions.iter().zip(&raw.partitions) {
        if let Some(first) = raw_p.get_ref().dma.first()
            && p.devices.is_empty()
        {
            ctx.push(Pending::warning(
                first.span(),
                format!(
                    "partition \"{}\" owns DMA regions but no device that could use them",
                    name.get_ref()
                ),
            ));
        }
    }
    for (i, name) in raw.devices.keys().enumerate() {
        if devices[i].owner.is_none() {
            ctx.push(Pending::warning(
                name.span(),
                format!(
                    "device \"{}\" is not granted to any partition",
                    name.get_ref()
                ),
            ));
        }
    }

    // [memory.ARCH]
    let memory = memory(ctx, raw, &arches);
    for res in &located {
        resource_conflicts(ctx, res, &devices, &memory);
    }

    // [channels.NAME], [notifications.NAME], [shared.NAME]
    let channels = channels(ctx, raw, &names);
    let notifications = notifications(ctx, raw, &names);
    let shared_regions = shared(ctx, raw, &names);

    // Memory over-commitment per architecture.
    let demand: u64 = partitions
        .iter()
        .map(|p| p.memory + p.dma.iter().map(|d| d.size).sum::<u64>())
        .sum::<u64>()
        + shared_regions.iter().map(|s| s.size).sum::<u64>();
    for (pool, span) in &memory {
        let total = pool.total();
        if demand > total {
            ctx.error(
                span.clone(),
                format!(
                    "memory over-committed on {}: partitions, DMA and shared regions need {} \
                     but RAM holds {}",
                    pool.arch,
                    format_size(demand),
                    format_size(total)
                ),
            );
        }
    }

    // [schedule]
    let schedule = schedule(ctx, raw, &names, &mut partitions);

    // `config` tables against the programs' schemas.
    let mut channels = channels;
    crate::settings::check(
        ctx,
        raw,
        programs,
        &mut partitions,
        &mut channels,
        &Resolved {
            devices: &devices,
            notifications: &notifications,
            shared: &shared_regions,
        },
    );

    Some(System {
        name,
        arches,
        memory: memory.into_iter().map(|(m, _)| m).collect(),
        partitions,
        schedule,
        devices,
        channels,
        notifications,
        shared_regions,
    })
}

/// A `config` table as written (for a program whose settings are not checked).
fn config(raw: Option<&Spanned<Config>>) -> toml::Table {
    raw.map(|t| t.get_ref().iter())
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.get_ref().clone(), v.get_ref().clone()))
        .collect()
}

fn partition(ctx: &mut Ctx, name: &Name, p: &RawPartition, programs: &Programs) -> Partition {
    ctx.name(name, "partition");
    let program_name = p.program.as_ref().unwrap_or(name);
    if let Some(known) = programs.names()
        && !known.contains(program_name.get_ref())
    {
        ctx.error(
            program_name.span(),
            format!("unknown program \"{}\"", program_name.get_ref()),
        );
    }
    let memory = ctx.page_size(&p.memory, "memory budget").unwrap_or(0);

    if p.threads.is_empty() {
        ctx.error(
            name.span(),
            format!("partition \"{}\" has no threads", name.get_ref()),
        );
    }
    let mut threads: Vec<Thread> = Vec::new();
    let mut thread_names: HashMap<&str, Span> = HashMap::new();
    for t in &p.threads {
        let t = t.get_ref();
        ctx.name(&t.name, "thread");
        if let Some(first) = thread_names.insert(t.name.get_ref(), t.name.span()) {
            ctx.push(
                Pending::error(
                    t.name.span(),
                    format!(
                        "thread \"{}\" is declared twice in partition \"{}\"",
                        t.name.get_ref(),
                        name.get_ref()
                    ),
                )
                .note(first, "first declared here"),
            );
        }
        let prio = *t.priority.get_ref();
        let priority = match u8::try_from(prio) {
            Ok(p) if p <= MAX_PRIORITY => p,
            _ => {
                ctx.error(
                    t.priority.span(),
                    format!("priority {prio} is out of range (0..={MAX_PRIORITY})"),
                );
                0
            }
        };
        let stack = match &t.stack {
            Some(q) => ctx.page_size(q, "stack size").unwrap_or(0),
            None => DEFAULT_STACK,
        };
        threads.push(Thread {
            name: t.name.get_ref().clone(),
            priority,
            stack,
        });
    }
    let stacks: u64 = threads.iter().map(|t| t.stack).sum();
    if memory != 0 && stacks >= memory {
        ctx.error(
            p.memory.span(),
            format!(
                "memory budget of partition \"{}\" ({}) is over-committed: its thread stacks \
                 alone need {}",
                name.get_ref(),
                format_size(memory),
                format_size(stacks)
            ),
        );
    }

    let health = match &p.health {
        None => HealthPolicy::Stop,
        Some(h) => health(ctx, h),
    };

    let mut dma = Vec::new();
    let mut dma_names: HashMap<&str, Span> = HashMap::new();
    for d in &p.dma {
        let d = d.get_ref();
        ctx.name(&d.name, "DMA region");
        if let Some(first) = dma_names.insert(d.name.get_ref(), d.name.span()) {
            ctx.push(
                Pending::error(
                    d.name.span(),
                    format!(
                        "DMA region \"{}\" is declared twice in partition \"{}\"",
                        d.name.get_ref(),
                        name.get_ref()
                    ),
                )
                .note(first, "first declared here"),
            );
        }
        let size = ctx.page_size(&d.size, "DMA region size").unwrap_or(0);
        let cache = ctx.cache(d.cache.as_ref(), CacheAttr::WriteBack);
        dma.push(DmaRegion {
            name: d.name.get_ref().clone(),
            size,
            cache,
        });
    }

    Partition {
        name: name.get_ref().clone(),
        program: program_name.get_ref().clone(),
        memory,
        threads,
        health,
        devices: Vec::new(),
        dma,
        background: false,
        config: config(p.config.as_ref()),
    }
}

fn health(ctx: &mut Ctx, h: &Spanned<RawHealth>) -> HealthPolicy {
    let r = h.get_ref();
    match r.action.get_ref().as_str() {
        "restart" => {
            let max = match &r.max_restarts {
                None => {
                    ctx.error(
                        h.span(),
                        "action \"restart\" needs max-restarts (restarts allowed per period)",
                    );
                    None
                }
                Some(m) => match u32::try_from(*m.get_ref()) {
                    // The kernel's health monitor remembers this many restart times; refuse more here
                    // rather than have the kernel refuse the partition at boot.
                    Ok(v) if v as usize > kcore::health::MAX_TRACKED_RESTARTS => {
                        ctx.error(
                            m.span(),
                            format!(
                                "max-restarts must be at most {} (the health monitor remembers that many restarts)",
                                kcore::health::MAX_TRACKED_RESTARTS
                            ),
                        );
                        None
                    }
                    Ok(v) if v > 0 => Some(v),
                    _ => {
                        ctx.error(
                            m.span(),
                            "max-restarts must be at least 1 (use action \"stop\" for none)",
                        );
                        None
                    }
                },
            };
            let period = match &r.period {
                None => {
                    ctx.error(
                        h.span(),
                        "action \"restart\" needs period (the window max-restarts counts in)",
                    );
                    None
                }
                Some(q) => match ctx.duration(q) {
                    Some(0) => {
                        ctx.error(q.span(), "period must not be zero");
                        None
                    }
                    other => other,
                },
            };
            HealthPolicy::Restart {
                max_restarts: max.unwrap_or(1),
                period_ns: period.unwrap_or(1),
            }
        }
        action @ ("stop" | "halt") => {
            if let Some(m) = &r.max_restarts {
                ctx.error(m.span(), "max-restarts only applies to action \"restart\"");
            }
            if let Some(p) = &r.period {
                ctx.error(p.span(), "period only applies to action \"restart\"");
            }
            if action == "stop" {
                HealthPolicy::Stop
            } else {
                HealthPolicy::Halt
            }
        }
        other => {
            ctx.error(
                r.action.span(),
                format!(
                    "unknown health action \"{other}\" (expected \"restart\", \"stop\" or \"halt\")"
                ),
            );
            HealthPolicy::Stop
        }
    }
}

fn parse_pci_address(s: &str) -> Option<PciAddress> {
    let (bus, rest) = s.split_once(':')?;
    let (dev, func) = rest.split_once('.')?;
    let hex = |t: &str, max: u32| -> Option<u8> {
        if t.is_empty() || t.len() > 2 {
            return None;
        }
        let v = u32::from_str_radix(t, 16).ok()?;
        u8::try_from(v).ok().filter(|&v| u32::from(v) <= max)
    };
    Some(PciAddress {
        bus: hex(bus, 0xff)?,
        device: hex(dev, 0x1f)?,
        function: if func.len() == 1 {
            hex(func, 7)?
        } else {
            return None;
        },
    })
}

fn parse_pci_id(s: &str) -> Option<PciId> {
    let (v, d) = s.split_once(':')?;
    let hex = |t: &str| {
        if t.len() == 4 {
            u16::from_str_radix(t, 16).ok()
        } else {
            None
        }
    };
    Some(PciId {
        vendor: hex(v)?,
        device: hex(d)?,
    })
}

fn pci(ctx: &mut Ctx, p: &Spanned<RawPci>) -> Option<PciFunction> {
    let r = p.get_ref();
    if r.address.is_none() && r.id.is_none() {
        ctx.error(
            p.span(),
            "a PCI function needs an address (\"bus:device.function\") or an id \
             (\"vendor:device\"), or both",
        );
        return None;
    }
    let mut ok = true;
    let address = r.address.as_ref().and_then(|a| {
        let v = parse_pci_address(a.get_ref());
        if v.is_none() {
            ok = false;
            ctx.error(
                a.span(),
                format!(
                    "invalid PCI address \"{}\": expected bus:device.function in hex, e.g. \
                     \"00:04.0\" (device at most 1f, function at most 7)",
                    a.get_ref()
                ),
            );
        }
        v
    });
    let id = r.id.as_ref().and_then(|i| {
        let v = parse_pci_id(i.get_ref());
        if v.is_none() {
            ok = false;
            ctx.error(
                i.span(),
                format!(
                    "invalid PCI id \"{}\": expected vendor:device as four hex digits each, \
                     e.g. \"1af4:1042\"",
                    i.get_ref()
                ),
            );
        }
        v
    });
    ok.then_some(PciFunction { address, id })
}

/// One device: its resources on each architecture it exists on.
fn device(
    ctx: &mut Ctx,
    id: DeviceId,
    name: &Name,
    d: &RawDevice,
    system_arches: &[Arch],
    located: &mut [ArchResources],
) -> Device {
    ctx.name(name, "device");
    let dname = name.get_ref();
    let arches: Vec<Arch> = match &d.arch {
        None => system_arches.to_vec(),
        Some(list) => {
            if list.get_ref().is_empty() {
                ctx.error(list.span(), "arch must name at least one architecture");
            }
            let mut v = Vec::new();
            for a in list.get_ref() {
                let Some(arch) = ctx.arch(a) else { continue };
                if !system_arches.contains(&arch) {
                    ctx.error(
                        a.span(),
                        format!(
                            "device \"{dname}\" is for {arch}, which the system does not target"
                        ),
                    );
                } else if v.contains(&arch) {
                    ctx.error(a.span(), format!("architecture \"{arch}\" is listed twice"));
                } else {
                    v.push(arch);
                }
            }
            v.sort();
            v
        }
    };
    let common = RawResourcesRef {
        pci: d.pci.as_ref(),
        mmio: &d.mmio,
        io_ports: &d.io_ports,
        irqs: &d.irqs,
        msi: d.msi.as_ref(),
    };
    let mut resources = Vec::new();
    for (arch, sub) in [(Arch::X86_64, &d.x86_64), (Arch::Aarch64, &d.aarch64)] {
        if let Some(sub) = sub
            && !arches.contains(&arch)
        {
            ctx.error(
                sub.span(),
                format!(
                    "device \"{dname}\" has a [devices.{dname}.{arch}] table but is not \
                     present on {arch}"
                ),
            );
        }
        if !arches.contains(&arch) {
            continue;
        }
        let specific = sub.as_ref().map(|s| {
            let s = s.get_ref();
            RawResourcesRef {
                pci: s.pci.as_ref(),
                mmio: &s.mmio,
                io_ports: &s.io_ports,
                irqs: &s.irqs,
                msi: s.msi.as_ref(),
            }
        });
        let loc = located.iter_mut().find(|l| l.arch == arch);
        resources.push(resolve_resources(
            ctx,
            id,
            name,
            arch,
            &common,
            specific.as_ref(),
            loc,
        ));
    }
    Device {
        name: dname.clone(),
        kind: d.kind.as_ref().map(|k| k.get_ref().clone()),
        owner: None,
        resources,
    }
}

struct RawResourcesRef<'a> {
    pci: Option<&'a Spanned<RawPci>>,
    mmio: &'a [Spanned<RawMmio>],
    io_ports: &'a [Spanned<RawPorts>],
    irqs: &'a [Spanned<i64>],
    msi: Option<&'a Spanned<i64>>,
}

fn resolve_resources(
    ctx: &mut Ctx,
    id: DeviceId,
    name: &Name,
    arch: Arch,
    common: &RawResourcesRef<'_>,
    specific: Option<&RawResourcesRef<'_>>,
    mut located: Option<&mut ArchResources>,
) -> DeviceResources {
    let dname = name.get_ref();
    // Entries for every architecture are checked once per architecture; `check_str` drops
    // the repeated diagnostics (same span, same message).
    let parts: Vec<&RawResourcesRef<'_>> = std::iter::once(common).chain(specific).collect();
    let mut out = DeviceResources {
        arch,
        pci: None,
        mmio: Vec::new(),
        io_ports: Vec::new(),
        irqs: Vec::new(),
        msi: 0,
    };
    let mut pci_span = None;
    let mut msi_span = None;
    for part in &parts {
        if let Some(p) = part.pci {
            if pci_span.is_some() {
                ctx.error(
                    p.span(),
                    format!(
                        "device \"{dname}\" gives pci both for every architecture and for {arch}"
                    ),
                );
            } else {
                pci_span = Some(p.span());
                out.pci = pci(ctx, p);
                if let (Some(f), Some(l)) = (out.pci, located.as_deref_mut()) {
                    l.pci.push(Located {
                        device: id,
                        span: p.span(),
                        value: f,
                    });
                }
            }
        }
        for m in part.mmio {
            let r = m.get_ref();
            let base = *r.base.get_ref();
            if base < 0 {
                ctx.error(r.base.span(), "an MMIO base must not be negative");
                continue;
            }
            let Some(size) = ctx.size(&r.size) else {
                continue;
            };
            if size == 0 {
                ctx.error(r.size.span(), "MMIO size must not be zero");
                continue;
            }
            let range = MmioRange {
                base: base as u64,
                size,
                cache: ctx.cache(r.cache.as_ref(), CacheAttr::Device),
            };
            out.mmio.push(range);
            if let Some(l) = located.as_deref_mut() {
                l.mmio.push(Located {
                    device: id,
                    span: m.span(),
                    value: range,
                });
            }
        }
        for p in part.io_ports {
            let r = p.get_ref();
            if arch != Arch::X86_64 {
                ctx.error(
                    p.span(),
                    format!(
                        "device \"{dname}\" has I/O ports on {arch}; they exist only on x86_64 \
                         (put them in [devices.{dname}.x86_64])"
                    ),
                );
                continue;
            }
            let base = *r.base.get_ref();
            let count = *r.count.get_ref();
            if !(0..=0xffff).contains(&base) {
                ctx.error(
                    r.base.span(),
                    format!("I/O port {base:#x} is out of range (0..=0xffff)"),
                );
                continue;
            }
            if count <= 0 || base + count > 0x1_0000 {
                ctx.error(
                    r.count.span(),
                    format!(
                        "I/O port count {count} is out of range (1..={})",
                        0x1_0000 - base
                    ),
                );
                continue;
            }
            let range = IoPortRange {
                base: base as u16,
                count: count as u16,
            };
            out.io_ports.push(range);
            if let Some(l) = located.as_deref_mut() {
                l.ports.push(Located {
                    device: id,
                    span: p.span(),
                    value: range,
                });
            }
        }
        for irq in part.irqs {
            let v = *irq.get_ref();
            let Ok(n) = u32::try_from(v) else {
                ctx.error(irq.span(), format!("IRQ {v} is out of range"));
                continue;
            };
            if out.irqs.contains(&n) {
                ctx.error(
                    irq.span(),
                    format!("IRQ {n} is listed twice for device \"{dname}\""),
                );
                continue;
            }
            out.irqs.push(n);
            if let Some(l) = located.as_deref_mut() {
                l.irqs.push(Located {
                    device: id,
                    span: irq.span(),
                    value: n,
                });
            }
        }
        if let Some(m) = part.msi {
            if msi_span.is_some() {
                ctx.error(
                    m.span(),
                    format!(
                        "device \"{dname}\" gives msi both for every architecture and for {arch}"
                    ),
                );
            } else {
                msi_span = Some(m.span());
                match u16::try_from(*m.get_ref()) {
                    Ok(v) if (1..=2048).contains(&v) => out.msi = v,
                    _ => ctx.error(
                        m.span(),
                        format!(
                            "msi vector count {} is out of range (1..=2048)",
                            m.get_ref()
                        ),
                    ),
                }
            }
        }
    }
    if let Some(span) = msi_span
        && pci_span.is_none()
    {
        ctx.error(
            span,
            format!("device \"{dname}\" asks for MSI vectors but is not a PCI function"),
        );
    }
    if pci_span.is_none()
        && out.mmio.is_empty()
        && out.io_ports.is_empty()
        && out.irqs.is_empty()
        && parts
            .iter()
            .all(|p| p.mmio.is_empty() && p.io_ports.is_empty() && p.irqs.is_empty())
    {
        ctx.error(
            name.span(),
            format!(
                "device \"{dname}\" has no resources on {arch} (give pci, mmio, io-ports or irqs)"
            ),
        );
    }
    out.mmio.sort_by_key(|m| m.base);
    out
}

fn hex_range(base: u64, size: u64) -> String {
    format!("{base:#x}..{:#x}", base.saturating_add(size))
}

fn overlaps(a: u64, a_len: u64, b: u64, b_len: u64) -> bool {
    a < b.saturating_add(b_len) && b < a.saturating_add(a_len)
}

/// Two devices' resources must not collide; the same report is given once even when the
/// entries are shared by several architectures.
fn resource_conflicts(
    ctx: &mut Ctx,
    res: &ArchResources,
    devices: &[Device],
    memory: &[(MemoryPool, Span)],
) {
    let dev = |id: DeviceId| devices[id.0].name.as_str();
    let owner = |id: DeviceId| devices[id.0].owner;
    let seen = |ctx: &Ctx, span: &Span, msg: &str| {
        ctx.out.iter().any(|p| p.span == *span && p.message == msg)
    };
    let report = |ctx: &mut Ctx, span: Span, msg: String, other: Span, note: &str| {
        if !seen(ctx, &span, &msg) {
            ctx.push(Pending::error(span, msg).note(other, note));
        }
    };

    for (i, b) in res.mmio.iter().enumerate() {
        for a in &res.mmio[..i] {
            let (av, bv) = (a.value, b.value);
            if overlaps(av.base, av.size, bv.base, bv.size) {
                let msg = format!(
                    "MMIO range {} of device \"{}\" overlaps MMIO range {} of device \"{}\"",
                    hex_range(bv.base, bv.size),
                    dev(b.device),
                    hex_range(av.base, av.size),
                    dev(a.device)
                );
                report(ctx, b.span.clone(), msg, a.span.clone(), "overlapped range");
            } else if owner(a.device) != owner(b.device) {
                let page = |x: u64| x / PAGE_SIZE;
                let a_pages = (page(av.base), page(av.base + av.size - 1));
                let b_pages = (page(bv.base), page(bv.base + bv.size - 1));
                if a_pages.0 <= b_pages.1 && b_pages.0 <= a_pages.1 {
                    let msg = format!(
                        "MMIO range {} of device \"{}\" shares a 4 KiB page with device \"{}\", \
                         which is granted to another partition",
                        hex_range(bv.base, bv.size),
                        dev(b.device),
                        dev(a.device)
                    );
                    report(ctx, b.span.clone(), msg, a.span.clone(), "same page");
                }
            }
        }
        if let Some((pool, span)) = memory.iter().find(|(m, _)| m.arch == res.arch) {
            for r in &pool.ranges {
                if overlaps(b.value.base, b.value.size, r.base, r.size) {
                    let msg = format!(
                        "MMIO range {} of device \"{}\" overlaps RAM {} on {}",
                        hex_range(b.value.base, b.value.size),
                        dev(b.device),
                        hex_range(r.base, r.size),
                        res.arch
                    );
                    report(ctx, b.span.clone(), msg, span.clone(), "RAM declared here");
                }
            }
        }
    }
    for (i, b) in res.ports.iter().enumerate() {
        for a in &res.ports[..i] {
            let (av, bv) = (a.value, b.value);
            if overlaps(
                av.base.into(),
                av.count.into(),
                bv.base.into(),
                bv.count.into(),
            ) {
                let msg = format!(
                    "I/O ports {} of device \"{}\" overlap I/O ports {} of device \"{}\"",
                    hex_range(bv.base.into(), bv.count.into()),
                    dev(b.device),
                    hex_range(av.base.into(), av.count.into()),
                    dev(a.device)
                );
                report(ctx, b.span.clone(), msg, a.span.clone(), "overlapped ports");
            }
        }
    }
    for (i, b) in res.irqs.iter().enumerate() {
        for a in &res.irqs[..i] {
            if a.value == b.value && a.device != b.device && owner(a.device) != owner(b.device) {
                let msg = format!(
                    "IRQ {} of device \"{}\" is already used by device \"{}\" of another \
                     partition",
                    b.value,
                    dev(b.device),
                    dev(a.device)
                );
                report(ctx, b.span.clone(), msg, a.span.clone(), "first used here");
            }
        }
    }
    for (i, b) in res.pci.iter().enumerate() {
        for a in &res.pci[..i] {
            let (av, bv) = (a.value, b.value);
            match (av.address, bv.address) {
                (Some(x), Some(y)) if x == y => {
                    let msg = format!(
                        "PCI function {y} of device \"{}\" is already device \"{}\"",
                        dev(b.device),
                        dev(a.device)
                    );
                    report(
                        ctx,
                        b.span.clone(),
                        msg,
                        a.span.clone(),
                        "first declared here",
                    );
                }
                (None, None) if av.id == bv.id => {
                    let id = bv.id.expect("a PCI function has an address or an id");
                    let msg = format!(
                        "PCI id {:04x}:{:04x} of device \"{}\" also matches device \"{}\": \
                         give each an address",
                        id.vendor,
                        id.device,
                        dev(b.device),
                        dev(a.device)
                    );
                    report(ctx, b.span.clone(), msg, a.span.clone(), "same id");
                }
                _ => {}
            }
        }
    }
}

fn memory(ctx: &mut Ctx, raw: &RawSystem, arches: &[Arch]) -> Vec<(MemoryPool, Span)> {
    let mut pools = Vec::new();
    for (key, m) in &raw.memory {
        let Some(arch) = ctx.arch(key) else { continue };
        if !arches.contains(&arch) {
            ctx.error(
                key.span(),
                format!("[memory.{arch}] is for an architecture the system does not target"),
            );
            continue;
        }
        let mut ranges: Vec<(PhysRange, Span)> = Vec::new();
        let mut complete = true;
        for r in &m.get_ref().ram {
            let rr = r.get_ref();
            let base = *rr.base.get_ref();
            if base < 0 || !(base as u64).is_multiple_of(PAGE_SIZE) {
                ctx.error(
                    rr.base.span(),
                    format!("RAM base {base:#x} is not a page-aligned physical address"),
                );
                complete = false;
                continue;
            }
            let Some(size) = ctx.page_size(&rr.size, "RAM size") else {
                complete = false;
                continue;
            };
            let range = PhysRange {
                base: base as u64,
                size,
            };
            if let Some((other, other_span)) = ranges
                .iter()
                .find(|(o, _)| overlaps(o.base, o.size, range.base, range.size))
            {
                ctx.push(
                    Pending::error(
                        r.span(),
                        format!(
                            "RAM {} overlaps RAM {}",
                            hex_range(range.base, range.size),
                            hex_range(other.base, other.size)
                        ),
                    )
                    .note(other_span.clone(), "overlapped range"),
                );
                continue;
            }
            ranges.push((range, r.span()));
        }
        if m.get_ref().ram.is_empty() {
            ctx.error(key.span(), format!("[memory.{arch}] has no ram ranges"));
            complete = false;
        }
        let mut ranges: Vec<PhysRange> = ranges.into_iter().map(|(r, _)| r).collect();
        ranges.sort_by_key(|r| r.base);
        // An incomplete pool is already an error; measuring demand against it would only add
        // a misleading over-commitment report.
        if complete {
            pools.push((MemoryPool { arch, ranges }, key.span()));
        }
    }
    pools.sort_by_key(|(p, _)| p.arch);
    pools
}

fn channels(ctx: &mut Ctx, raw: &RawSystem, names: &Names<'_>) -> Vec<Channel> {
    let mut out = Vec::new();
    for (name, c) in &raw.channels {
        ctx.name(name, "channel");
        let c = c.get_ref();
        let client = names.partition(ctx, &c.client);
        let server = names.partition(ctx, &c.server);
        if client.is_some() && client == server {
            ctx.error(
                c.server.span(),
                format!(
                    "channel \"{}\" connects partition \"{}\" to itself",
                    name.get_ref(),
                    c.client.get_ref()
                ),
            );
        }
        let size = ctx.size(&c.message_size);
        let message_size = match size {
            Some(0) => {
                ctx.error(
                    c.message_size.span(),
                    format!(
                        "message size of channel \"{}\" must not be zero",
                        name.get_ref()
                    ),
                );
                0
            }
            Some(s) if s > MAX_MESSAGE_SIZE => {
                ctx.error(
                    c.message_size.span(),
                    format!(
                        "message size of channel \"{}\" is {}; the largest allowed is {}",
                        name.get_ref(),
                        format_size(s),
                        format_size(MAX_MESSAGE_SIZE)
                    ),
                );
                0
            }
            Some(s) => s as u32,
            None => 0,
        };
        if let (Some(client), Some(server)) = (client, server) {
            out.push(Channel {
                name: name.get_ref().clone(),
                client,
                server,
                message_size,
                config: config(c.config.as_ref()),
            });
        }
    }
    out
}

fn notifications(ctx: &mut Ctx, raw: &RawSystem, names: &Names<'_>) -> Vec<Notification> {
    let mut out = Vec::new();
    let mut bits: BTreeMap<PartitionId, u8> = BTreeMap::new();
    for (name, n) in &raw.notifications {
        ctx.name(name, "notification");
        let n = n.get_ref();
        let receiver = names.partition(ctx, &n.receiver);
        if n.senders.get_ref().is_empty() {
            ctx.error(
                n.senders.span(),
                format!("notification \"{}\" has no senders", name.get_ref()),
            );
        }
        let mut senders = Vec::new();
        for s in n.senders.get_ref() {
            let Some(id) = names.partition(ctx, s) else {
                continue;
            };
            if Some(id) == receiver {
                ctx.error(
                    s.span(),
                    format!(
                        "partition \"{}\" cannot notify itself through \"{}\"",
                        s.get_ref(),
                        name.get_ref()
                    ),
                );
            } else if senders.contains(&id) {
                ctx.error(
                    s.span(),
                    format!("sender \"{}\" is listed twice", s.get_ref()),
                );
            } else {
                senders.push(id);
            }
        }
        let Some(receiver) = receiver else { continue };
        let bit = bits.entry(receiver).or_insert(0);
        if usize::from(*bit) >= NOTIFICATION_BITS {
            ctx.error(
                name.span(),
                format!(
                    "partition \"{}\" receives more than {NOTIFICATION_BITS} notifications",
                    n.receiver.get_ref()
                ),
            );
            continue;
        }
        out.push(Notification {
            name: name.get_ref().clone(),
            senders,
            receiver,
            bit: *bit,
        });
        *bit += 1;
    }
    out
}

fn shared(ctx: &mut Ctx, raw: &RawSystem, names: &Names<'_>) -> Vec<SharedRegion> {
    let mut out = Vec::new();
    for (name, s) in &raw.shared {
        ctx.name(name, "shared region");
        let s = s.get_ref();
        let size = ctx.page_size(&s.size, "shared region size").unwrap_or(0);
        let cache = ctx.cache(s.cache.as_ref(), CacheAttr::WriteBack);
        let mut mappings: Vec<Mapping> = Vec::new();
        for m in s.map.get_ref() {
            let m = m.get_ref();
            let access = match m.access.get_ref().as_str() {
                "read-only" => Some(Access::ReadOnly),
                "read-write" => Some(Access::ReadWrite),
                other => {
                    ctx.error(
                        m.access.span(),
                        format!(
                            "unknown access \"{other}\" (expected \"read-only\" or \"read-write\")"
                        ),
                    );
                    None
                }
            };
            let Some(partition) = names.partition(ctx, &m.partition) else {
                continue;
            };
            if mappings.iter().any(|x| x.partition == partition) {
                ctx.error(
                    m.partition.span(),
                    format!(
                        "partition \"{}\" maps shared region \"{}\" twice",
                        m.partition.get_ref(),
                        name.get_ref()
                    ),
                );
                continue;
            }
            if let Some(access) = access {
                mappings.push(Mapping { partition, access });
            }
        }
        if mappings.len() >= 2 && mappings.iter().all(|m| m.access == Access::ReadOnly) {
            ctx.push(Pending::warning(
                s.map.span(),
                format!(
                    "no partition can write shared region \"{}\": every mapping is read-only",
                    name.get_ref()
                ),
            ));
        }
        if s.map.get_ref().len() < 2 {
            ctx.error(
                s.map.span(),
                format!(
                    "shared region \"{}\" must be mapped by at least two partitions",
                    name.get_ref()
                ),
            );
        }
        let dma_owner = s.dma_owner.as_ref().and_then(|owner| {
            let id = names.partition(ctx, owner)?;
            if !mappings.iter().any(|m| m.partition == id) {
                ctx.error(
                    owner.span(),
                    format!(
                        "dma-owner \"{}\" of shared region \"{}\" does not map it",
                        owner.get_ref(),
                        name.get_ref()
                    ),
                );
                return None;
            }
            let devices = raw
                .partitions
                .iter()
                .find(|(n, _)| n.get_ref() == owner.get_ref())
                .is_some_and(|(_, p)| !p.get_ref().devices.is_empty());
            if !devices {
                ctx.error(
                    owner.span(),
                    format!(
                        "dma-owner \"{}\" of shared region \"{}\" owns no device that could use it",
                        owner.get_ref(),
                        name.get_ref()
                    ),
                );
                return None;
            }
            Some(id)
        });
        out.push(SharedRegion {
            name: name.get_ref().clone(),
            size,
            cache,
            mappings,
            dma_owner,
        });
    }
    out
}

fn schedule(
    ctx: &mut Ctx,
    raw: &RawSystem,
    names: &Names<'_>,
    partitions: &mut [Partition],
) -> Schedule {
    let Some(sched) = &raw.schedule else {
        ctx.error(
            0..0,
            "missing [schedule] table (with major-frame and windows)",
        );
        return Schedule {
            major_frame_ns: 0,
            windows: Vec::new(),
            background: Vec::new(),
        };
    };
    let s = sched.get_ref();
    let major = ctx.duration(&s.major_frame);
    if major == Some(0) {
        ctx.error(s.major_frame.span(), "the major frame must not be zero");
    }

    // Resolve windows; a window without offset starts where the previous one ended.
    let mut windows: Vec<(Window, Span, usize)> = Vec::new();
    let mut next_offset = 0u64;
    for (i, w) in s.windows.iter().enumerate() {
        let r = w.get_ref();
        let partition = names.partition(ctx, &r.partition);
        let offset = match &r.offset {
            Some(q) => ctx.duration(q),
            None => Some(next_offset),
        };
        let length = ctx.duration(&r.length);
        let (Some(offset), Some(length)) = (offset, length) else {
            continue;
        };
        next_offset = offset.saturating_add(length);
        let pname = r.partition.get_ref();
        if length == 0 {
            ctx.error(
                r.length.span(),
                format!("window of \"{pname}\" has zero length"),
            );
            continue;
        }
        if let Some(major) = major.filter(|&m| m > 0)
            && offset.saturating_add(length) > major
        {
            ctx.error(
                w.span(),
                format!(
                    "window of \"{pname}\" ({}) runs past the end of the major frame ({})",
                    span_text(offset, length),
                    format_duration(major)
                ),
            );
        }
        let Some(partition) = partition else { continue };
        windows.push((
            Window {
                partition,
                offset_ns: offset,
                length_ns: length,
            },
            w.span(),
            i,
        ));
    }
    windows.sort_by_key(|(w, _, i)| (w.offset_ns, *i));
    let mut furthest: Option<usize> = None;
    for i in 0..windows.len() {
        if let Some(f) = furthest {
            let (a, a_span, _) = &windows[f];
            let (b, b_span, _) = &windows[i];
            if b.offset_ns < a.end_ns() {
                ctx.push(
                    Pending::error(
                        b_span.clone(),
                        format!(
                            "window of \"{}\" ({}) overlaps window of \"{}\" ({})",
                            partitions[b.partition.0].name,
                            span_text(b.offset_ns, b.length_ns),
                            partitions[a.partition.0].name,
                            span_text(a.offset_ns, a.length_ns)
                        ),
                    )
                    .note(a_span.clone(), "overlapped window"),
                );
            }
        }
        if furthest.is_none_or(|f| windows[i].0.end_ns() > windows[f].0.end_ns()) {
            furthest = Some(i);
        }
    }

    let mut background = Vec::new();
    for b in &s.background {
        let Some(id) = names.partition(ctx, b) else {
            continue;
        };
        if background.contains(&id) {
            ctx.error(
                b.span(),
                format!(
                    "partition \"{}\" is listed twice in the background set",
                    b.get_ref()
                ),
            );
            continue;
        }
        background.push(id);
        partitions[id.0].background = true;
    }

    let windowed: HashSet<PartitionId> = s
        .windows
        .iter()
        .filter_map(|w| {
            names
                .partitions
                .get(w.get_ref().partition.get_ref().as_str())
                .copied()
        })
        .collect();
    for (i, name) in raw.partitions.keys().enumerate() {
        let id = PartitionId(i);
        if !windowed.contains(&id) && !background.contains(&id) {
            ctx.error(
                name.span(),
                format!(
                    "partition \"{}\" has no window and is not in the background set, so it \
                     would never run",
                    name.get_ref()
                ),
            );
        }
    }

    Schedule {
        major_frame_ns: major.unwrap_or(0),
        windows: windows.into_iter().map(|(w, _, _)| w).collect(),
        background,
    }
}

fn span_text(offset: u64, length: u64) -> String {
    format!(
        "{}..{}",
        format_duration(offset),
        format_duration(offset.saturating_add(length))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_addresses() {
        assert_eq!(
            parse_pci_address("00:1f.7"),
            Some(PciAddress {
                bus: 0,
                device: 0x1f,
                function: 7
            })
        );
        assert_eq!(
            parse_pci_address("ff:04.0").map(|a| a.to_string()),
            Some("ff:04.0".to_owned())
        );
        for bad in [
            "0:4", "00:20.0", "00:04.8", "00:04", "100:04.0", "00:04.00", "xx:04.0",
        ] {
            assert_eq!(parse_pci_address(bad), None, "{bad}");
        }
    }

    #[test]
    fn pci_ids() {
        assert_eq!(
            parse_pci_id("1af4:1042"),
            Some(PciId {
                vendor: 0x1af4,
                device: 0x1042
            })
        );
        for bad in ["1af4", "1af4:42", "1af4:10421", "zzzz:1000"] {
            assert_eq!(parse_pci_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn ranges_overlap_only_when_they_share_a_byte() {
        assert!(overlaps(0, 10, 9, 1));
        assert!(!overlaps(0, 10, 10, 1));
        assert!(!overlaps(10, 1, 0, 10));
        assert!(overlaps(5, 1, 0, 10));
        assert!(overlaps(u64::MAX - 1, 10, u64::MAX - 2, 10));
    }
}
