//! The validated, resolved system: plain data for the image builder and the kernel's tables.
//!
//! Every cross reference is an index into one of the `System` vectors (wrapped in a newtype so
//! that a partition index cannot be used as a device index). Sizes are bytes, times are
//! nanoseconds, and everything is in declaration order unless a field says otherwise.

use serde::Serialize;

/// Index into [`System::partitions`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct PartitionId(pub usize);

/// Index into [`System::devices`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct DeviceId(pub usize);

/// A target architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// Every architecture, in the order used throughout the model.
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// The name used in descriptions (`"x86_64"`, `"aarch64"`).
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// Parses a name used in descriptions.
    pub fn from_name(name: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.name() == name)
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A validated system description.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct System {
    /// `[system] name`.
    pub name: String,
    /// Architectures this description may be built for (at least one, no duplicates).
    pub arches: Vec<Arch>,
    /// RAM the image builder may place partitions, shared and DMA regions in, per architecture.
    /// An architecture without a `[memory.ARCH]` table has no entry (the builder's default).
    pub memory: Vec<MemoryPool>,
    /// Partitions in declaration order; [`PartitionId`] indexes this.
    pub partitions: Vec<Partition>,
    /// The cyclic schedule.
    pub schedule: Schedule,
    /// Devices in declaration order; [`DeviceId`] indexes this.
    pub devices: Vec<Device>,
    /// Synchronous call/reply channels.
    pub channels: Vec<Channel>,
    /// Notification paths (asynchronous signals) between partitions.
    pub notifications: Vec<Notification>,
    /// Memory regions shared between partitions.
    pub shared_regions: Vec<SharedRegion>,
}

impl System {
    /// Finds a partition by name.
    pub fn partition(&self, name: &str) -> Option<PartitionId> {
        self.partitions
            .iter()
            .position(|p| p.name == name)
            .map(PartitionId)
    }

    /// Finds a device by name.
    pub fn device(&self, name: &str) -> Option<DeviceId> {
        self.devices
            .iter()
            .position(|d| d.name == name)
            .map(DeviceId)
    }

    /// The distinct program names the partitions run, sorted: what the image builder builds.
    pub fn programs(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.partitions.iter().map(|p| p.program.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The memory pool for `arch`, if the description gives one.
    pub fn memory_pool(&self, arch: Arch) -> Option<&MemoryPool> {
        self.memory.iter().find(|m| m.arch == arch)
    }
}

/// Physical RAM available for partitions on one architecture.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemoryPool {
    pub arch: Arch,
    /// Page-aligned, non-overlapping ranges sorted by base.
    pub ranges: Vec<PhysRange>,
}

impl MemoryPool {
    /// Total bytes in the pool.
    pub fn total(&self) -> u64 {
        self.ranges.iter().map(|r| r.size).sum()
    }
}

/// A physical address range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PhysRange {
    pub base: u64,
    pub size: u64,
}

/// A partition: one address space with its threads.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Partition {
    pub name: String,
    /// Program (crate) name the partition runs; defaults to the partition's name.
    pub program: String,
    /// Memory budget in bytes for code, data, heap and the thread stacks (page multiple).
    pub memory: u64,
    /// Threads, in declaration order; the first is started at boot.
    pub threads: Vec<Thread>,
    pub health: HealthPolicy,
    /// Devices granted to this partition (each device has exactly one owner).
    pub devices: Vec<DeviceId>,
    /// DMA regions owned by this partition (outside the memory budget).
    pub dma: Vec<DmaRegion>,
    /// Whether the partition is in the background set.
    pub background: bool,
    /// Free-form configuration passed to the program (`[partitions.NAME.config]`).
    pub config: toml::Table,
}

/// A thread with a fixed priority.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Thread {
    pub name: String,
    /// `0..=MAX_PRIORITY`; a larger number is more urgent.
    pub priority: u8,
    /// Stack size in bytes (page multiple).
    pub stack: u64,
}

/// What the health monitor does when a partition faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum HealthPolicy {
    /// Restart the partition (its generation number increases), at most `max_restarts` times
    /// in any `period_ns`; beyond that the partition is stopped.
    Restart { max_restarts: u32, period_ns: u64 },
    /// Stop the partition; the rest of the system keeps running.
    Stop,
    /// Halt the whole system.
    Halt,
}

/// A DMA region a partition owns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DmaRegion {
    pub name: String,
    pub size: u64,
    pub cache: CacheAttr,
}

/// Cache attributes of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheAttr {
    /// Normal cacheable memory.
    WriteBack,
    /// Write-combining (framebuffers).
    WriteCombining,
    /// Normal memory, uncached.
    Uncached,
    /// Device memory (strongly ordered, no speculation): MMIO.
    Device,
}

impl CacheAttr {
    /// The name used in descriptions.
    pub fn name(self) -> &'static str {
        match self {
            CacheAttr::WriteBack => "write-back",
            CacheAttr::WriteCombining => "write-combining",
            CacheAttr::Uncached => "uncached",
            CacheAttr::Device => "device",
        }
    }
}

/// The cyclic schedule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Schedule {
    /// Length of the major frame in nanoseconds (> 0).
    pub major_frame_ns: u64,
    /// Windows sorted by offset; they do not overlap and lie within the major frame.
    pub windows: Vec<Window>,
    /// The always-eligible background set, in declaration order.
    pub background: Vec<PartitionId>,
}

/// A time window owned by one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Window {
    pub partition: PartitionId,
    /// Start, in nanoseconds from the start of the major frame.
    pub offset_ns: u64,
    /// Length in nanoseconds (> 0).
    pub length_ns: u64,
}

impl Window {
    /// End (exclusive) in nanoseconds from the start of the major frame.
    pub fn end_ns(&self) -> u64 {
        self.offset_ns + self.length_ns
    }
}

/// A device and, per architecture, the hardware resources it consists of.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Device {
    pub name: String,
    /// Free-form class, e.g. `"virtio-blk"`.
    pub kind: Option<String>,
    /// The partition the device is granted to (`None`: declared but unused; a warning).
    pub owner: Option<PartitionId>,
    /// Resources on each architecture the device exists on (sorted by arch).
    pub resources: Vec<DeviceResources>,
}

impl Device {
    /// The device's resources on `arch`, or `None` if it does not exist there.
    pub fn on(&self, arch: Arch) -> Option<&DeviceResources> {
        self.resources.iter().find(|r| r.arch == arch)
    }
}

/// The resources of one device on one architecture.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceResources {
    pub arch: Arch,
    pub pci: Option<PciFunction>,
    pub mmio: Vec<MmioRange>,
    pub io_ports: Vec<IoPortRange>,
    /// Interrupt lines (x86 GSI / GIC INTID).
    pub irqs: Vec<u32>,
    /// Number of MSI/MSI-X vectors to allocate (0: none); PCI devices only.
    pub msi: u16,
}

/// A PCI function, by location and/or by identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PciFunction {
    pub address: Option<PciAddress>,
    pub id: Option<PciId>,
}

/// `bus:device.function`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PciAddress {
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl std::fmt::Display for PciAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// `vendor:device`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PciId {
    pub vendor: u16,
    pub device: u16,
}

/// An MMIO range of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MmioRange {
    pub base: u64,
    pub size: u64,
    pub cache: CacheAttr,
}

/// An x86 I/O port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct IoPortRange {
    pub base: u16,
    pub count: u16,
}

/// A synchronous call/reply channel: the client `call`s, the server `recv`s and `reply`s.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Channel {
    pub name: String,
    pub client: PartitionId,
    pub server: PartitionId,
    /// Largest message in either direction, in bytes (`1..=MAX_MESSAGE_SIZE`).
    pub message_size: u32,
    /// Free-form per-client configuration for the server (`[channels.NAME.config]`), e.g. the
    /// virtual disk a block server exports to this client or the MAC a net server gives it.
    pub config: toml::Table,
}

/// A notification path: any sender may signal bit `bit` of the receiver's notification word.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Notification {
    pub name: String,
    pub senders: Vec<PartitionId>,
    pub receiver: PartitionId,
    /// Bit in the receiver's 64-bit notification word, assigned in declaration order.
    pub bit: u8,
}

/// A memory region shared between partitions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SharedRegion {
    pub name: String,
    pub size: u64,
    pub cache: CacheAttr,
    /// Who maps it and how (at least two partitions, each once).
    pub mappings: Vec<Mapping>,
    /// The partition that may hand the region to its devices for DMA and learn its physical
    /// address (`dma-owner`): one of the mappers, and one that owns a device.
    pub dma_owner: Option<PartitionId>,
}

/// One side of a shared region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Mapping {
    pub partition: PartitionId,
    pub access: Access,
}

/// Access rights of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    ReadOnly,
    ReadWrite,
}
