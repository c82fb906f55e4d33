//! The static system image: what the kernel creates at boot, generated from a system
//! description by `cargo xtask image`.
//!
//! Layout (little-endian; every offset from the start of the image):
//!
//! | at | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `BHIMAGE1` |
//! | 8 | 4 | total size |
//! | 12 | 2 | partition count |
//! | 14 | 2 | window count |
//! | 16 | 8 | major frame, ns |
//! | 24 | 4 | offset of the partition table ([`PARTITION_RECORD_SIZE`]-byte records) |
//! | 28 | 4 | offset of the window table ([`WINDOW_RECORD_SIZE`]-byte records) |
//! | 32 | 4 | offset of the kernel command line |
//! | 36 | 4 | length of the kernel command line |
//! | 40 | 4 | offset of the channel table ([`CHANNEL_RECORD_SIZE`]-byte records) |
//! | 44 | 2 | channel count |
//! | 46 | 2 | notification count |
//! | 48 | 4 | offset of the notification table ([`NOTIFICATION_RECORD_SIZE`]-byte records) |
//! | 52 | 4 | offset of the shared-region table ([`REGION_RECORD_SIZE`]-byte records) |
//! | 56 | 2 | shared-region count |
//! | 58 | 4 | offset of the DMA-region table ([`DMA_RECORD_SIZE`]-byte records) |
//! | 62 | 2 | DMA-region count |
//! | 64 | 4 | offset of the device table ([`DEVICE_RECORD_SIZE`]-byte records) |
//! | 68 | 2 | device count |
//! | 70 | 26 | reserved |
//!
//! Partition record: name (32 bytes, UTF-8, NUL-padded), ELF offset (4), ELF length (4),
//! memory budget (8), main-thread stack bytes (4), main-thread priority (1), health policy (1:
//! 0 stop, 1 restart, 2 halt), flags (1: bit 0 background set), pad (1), max restarts (4),
//! pad (4), restart period ns (8), configuration bytes offset (4) and length (4), reserved (16). Window record: partition index (4), pad (4),
//! offset ns (8), length ns (8). Channel record: name (32), client partition (2), server
//! partition (2), message size (4), reserved (8). Notification record: name (32), receiver
//! partition (2), bit (1), pad (5), senders as a partition bit mask (8). Shared-region record:
//! name (32), size (8), mapping count (1), cache attribute (1: [`Cache`]), DMA owner (2: the
//! partition that may learn the region's physical address and give it to its devices, one of
//! its mappers; [`NO_DMA_OWNER`] for none), pad (4), then [`MAX_REGION_MAPPINGS`] mappings of
//! 8 bytes: partition (2), writable (1), pad (5). DMA-region record: name (32), owner partition
//! (2), pad (6), size (8). Device record: see [`DeviceRecord`]. Configuration texts and ELF
//! files follow, each 8-byte aligned.
//!
//! Each table above is declared as a `#[repr(C)]` wire struct ([`Header`], [`PartitionEntry`],
//! [`WindowEntry`], [`ChannelEntry`], [`NotificationEntry`], [`RegionEntry`], [`DmaEntry`],
//! [`DeviceEntry`]) whose size and field offsets are asserted at compile time against these
//! numbers; the reader and the builder go through those structs (see [`crate::wire`]), never
//! through hand-written offsets.
//!
//! The reader checks every offset and length against the image, so a corrupt image is an
//! error at boot, never a fault.

use crate::wire::read_at;

/// The image's first eight bytes.
pub const MAGIC: [u8; 8] = *b"BHIMAGE2";
/// Size of the header.
pub const HEADER_SIZE: usize = Header::SIZE;
/// Size of a partition record.
pub const PARTITION_RECORD_SIZE: usize = PartitionEntry::SIZE;
/// Size of a window record.
pub const WINDOW_RECORD_SIZE: usize = WindowEntry::SIZE;
/// Size of a channel record.
pub const CHANNEL_RECORD_SIZE: usize = ChannelEntry::SIZE;
/// Size of a notification record.
pub const NOTIFICATION_RECORD_SIZE: usize = NotificationEntry::SIZE;
/// Size of a DMA-region record.
pub const DMA_RECORD_SIZE: usize = DmaEntry::SIZE;

/// Size of a device record.
pub const DEVICE_RECORD_SIZE: usize = DeviceEntry::SIZE;
/// Most MMIO ranges a device record holds.
pub const MAX_DEVICE_MMIO: usize = 2;
/// Most I/O port ranges a device record holds.
pub const MAX_DEVICE_IO: usize = 4;
/// Most interrupt lines a device record holds.
pub const MAX_DEVICE_IRQS: usize = 4;

/// An interrupt-line entry of a PCI device meaning "the function's INTx pin, wherever the
/// firmware routed it".
pub const PCI_INTX: u32 = u32::MAX;

/// Cache attributes of a mapping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Cache {
    /// Normal cacheable memory.
    #[default]
    WriteBack = 0,
    /// Write-combining (frame buffers).
    WriteCombining = 1,
    /// Normal memory, not cached.
    Uncached = 2,
    /// Device memory: strongly ordered, no speculation, no gathering.
    Device = 3,
}

impl Cache {
    fn from_byte(b: u8) -> Option<Cache> {
        Some(match b {
            0 => Cache::WriteBack,
            1 => Cache::WriteCombining,
            2 => Cache::Uncached,
            3 => Cache::Device,
            _ => return None,
        })
    }
}

/// An MMIO range of a device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmioRecord {
    /// First page of the range.
    pub base: u64,
    /// Bytes from `base`, whole pages.
    pub size: u32,
    pub cache: Cache,
    /// Where the device's registers start within the first page (a range granted in whole
    /// pages need not start on one: a virtio-mmio transport is 512 bytes).
    pub offset: u16,
}

/// Where a PCI function is: its location and/or its identity (`None`: not given).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PciRecord {
    /// (bus, device, function).
    pub address: Option<(u8, u8, u8)>,
    /// (vendor, device).
    pub id: Option<(u16, u16)>,
}

/// A device granted to one partition.
///
/// Layout: name (32), owner partition (2), flags (1: bit 0 PCI, bit 1 PCI address given, bit
/// 2 PCI id given), MMIO count (1), I/O range count (1), interrupt-line count (1), MSI-X vectors
/// (2), PCI bus, device, function (3), first notification bit (1), PCI vendor and device id
/// (2 + 2), [`MAX_DEVICE_MMIO`] MMIO ranges of 16 bytes (base 8, size 4, cache 1, pad 1,
/// offset of the registers in the first page 2),
/// [`MAX_DEVICE_IO`] I/O ranges of 4 bytes (first port 2, count 2), [`MAX_DEVICE_IRQS`]
/// interrupt lines of 4 bytes, reserved (16).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceRecord<'a> {
    pub name: &'a str,
    pub owner: u16,
    pub pci: Option<PciRecord>,
    pub mmio: [MmioRecord; MAX_DEVICE_MMIO],
    pub mmio_count: usize,
    /// (first port, count).
    pub io_ports: [(u16, u16); MAX_DEVICE_IO],
    pub io_count: usize,
    /// x86: I/O APIC inputs (GSIs); aarch64: GIC interrupt ids.
    pub irqs: [u32; MAX_DEVICE_IRQS],
    pub irq_count: usize,
    /// MSI-X vectors to enable (PCI only).
    pub msix: u16,
    /// The owner's notification bit raised by the first interrupt (lines, then MSI-X vectors,
    /// on consecutive bits).
    pub irq_bit: u8,
}

impl DeviceRecord<'_> {
    /// Number of notification bits the device's interrupts use.
    pub fn irq_bit_count(&self) -> usize {
        self.irq_count + self.msix as usize
    }
}

/// Physically contiguous memory a partition owns, for devices to read and write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaRecord<'a> {
    pub name: &'a str,
    pub owner: u16,
    pub size: u64,
}

/// Size of a shared-region record.
pub const REGION_RECORD_SIZE: usize = RegionEntry::SIZE;
/// Most partitions one shared region may be mapped into.
pub const MAX_REGION_MAPPINGS: usize = 8;

/// The DMA-owner field of a shared-region record that names no partition.
pub const NO_DMA_OWNER: u16 = u16::MAX;

/// A memory region shared between partitions, each mapping it read-only or read-write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionRecord<'a> {
    pub name: &'a str,
    pub size: u64,
    /// (partition, writable) for the first `mapping_count` entries.
    pub mappings: [(u16, bool); MAX_REGION_MAPPINGS],
    pub mapping_count: usize,
    pub cache: Cache,
    /// The partition that may learn the region's physical address (to let its devices DMA
    /// into it); always one of the mappings.
    pub dma_owner: Option<u16>,
}

/// Longest partition, channel or notification name.
pub const NAME_LEN: usize = 32;

/// A synchronous call/reply channel between two partitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelRecord<'a> {
    pub name: &'a str,
    pub client: u16,
    pub server: u16,
    pub message_size: u32,
}

/// A notification: a bit in its receiver's word that its senders may set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotificationRecord<'a> {
    pub name: &'a str,
    pub receiver: u16,
    pub bit: u8,
    /// Partitions allowed to send, as a bit mask of partition indexes.
    pub senders: u64,
}

/// What happens to a partition that faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthPolicy {
    Stop,
    Restart { max_restarts: u32, period_ns: u64 },
    Halt,
}

/// Why an image was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    TooShort,
    BadMagic,
    /// The header's total size disagrees with the bytes given.
    BadSize,
    /// A table or the command line lies outside the image.
    TableOutOfBounds,
    /// A partition record is malformed (its index given).
    BadPartition(usize),
    /// A window record is malformed (its index given).
    BadWindow(usize),
    /// A channel record is malformed (its index given).
    BadChannel(usize),
    /// A notification record is malformed (its index given).
    BadNotification(usize),
    /// A shared-region record is malformed (its index given).
    BadRegion(usize),
    /// A DMA-region record is malformed (its index given).
    BadDma(usize),
    /// A device record is malformed (its index given).
    BadDevice(usize),
}

/// One partition as the image describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionRecord<'a> {
    pub name: &'a str,
    pub elf: &'a [u8],
    pub memory_bytes: u64,
    pub stack_bytes: u32,
    pub priority: u8,
    pub policy: HealthPolicy,
    pub background: bool,
    /// The partition's configuration bytes (typed records, see `bulkhead_rt::config`).
    pub config: &'a [u8],
}

/// One window of the cyclic schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowRecord {
    pub partition: u32,
    pub offset_ns: u64,
    pub length_ns: u64,
}

/// A validated system image.
#[derive(Clone, Copy, Debug)]
pub struct SystemImage<'a> {
    bytes: &'a [u8],
    partition_count: usize,
    window_count: usize,
    partitions_at: usize,
    windows_at: usize,
    major_frame_ns: u64,
    cmdline: &'a str,
    channels_at: usize,
    channel_count: usize,
    notifications_at: usize,
    notification_count: usize,
    regions_at: usize,
    region_count: usize,
    dma_at: usize,
    dma_count: usize,
    devices_at: usize,
    device_count: usize,
}

// The image's wire records, as the kernel and the host builder both read and write them. The
// offsets are the format's (see the module documentation) and are asserted at compile time.

abi::wire_struct! {
    /// The image header. Packed to 2 bytes because the DMA table's offset sits at 58, below a
    /// `u32`'s natural alignment; the format predates these structs and stays byte-identical.
    #[repr(C, packed(2))]
    pub struct Header(96) {
        pub magic: [u8; 8] = 0,
        pub total: u32 = 8,
        pub partition_count: u16 = 12,
        pub window_count: u16 = 14,
        pub major_frame_ns: u64 = 16,
        pub partitions_at: u32 = 24,
        pub windows_at: u32 = 28,
        pub cmdline_at: u32 = 32,
        pub cmdline_len: u32 = 36,
        pub channels_at: u32 = 40,
        pub channel_count: u16 = 44,
        pub notification_count: u16 = 46,
        pub notifications_at: u32 = 48,
        pub regions_at: u32 = 52,
        pub region_count: u16 = 56,
        pub dma_at: u32 = 58,
        pub dma_count: u16 = 62,
        pub devices_at: u32 = 64,
        pub device_count: u16 = 68,
        pub reserved: [u8; 26] = 70,
    }
}

abi::wire_struct! {
    /// A partition record.
    #[repr(C)]
    pub struct PartitionEntry(96) {
        pub name: [u8; NAME_LEN] = 0,
        pub elf_at: u32 = 32,
        pub elf_len: u32 = 36,
        pub memory_bytes: u64 = 40,
        pub stack_bytes: u32 = 48,
        pub priority: u8 = 52,
        /// 0 stop, 1 restart, 2 halt.
        pub policy: u8 = 53,
        /// Bit 0: background set.
        pub flags: u8 = 54,
        pub pad0: u8 = 55,
        pub max_restarts: u32 = 56,
        pub pad1: [u8; 4] = 60,
        pub period_ns: u64 = 64,
        pub config_at: u32 = 72,
        pub config_len: u32 = 76,
        pub reserved: [u8; 16] = 80,
    }
}

abi::wire_struct! {
    /// A window record.
    #[repr(C)]
    pub struct WindowEntry(24) {
        pub partition: u32 = 0,
        pub pad: [u8; 4] = 4,
        pub offset_ns: u64 = 8,
        pub length_ns: u64 = 16,
    }
}

abi::wire_struct! {
    /// A channel record.
    #[repr(C)]
    pub struct ChannelEntry(48) {
        pub name: [u8; NAME_LEN] = 0,
        pub client: u16 = 32,
        pub server: u16 = 34,
        pub message_size: u32 = 36,
        pub reserved: [u8; 8] = 40,
    }
}

abi::wire_struct! {
    /// A notification record.
    #[repr(C)]
    pub struct NotificationEntry(48) {
        pub name: [u8; NAME_LEN] = 0,
        pub receiver: u16 = 32,
        pub bit: u8 = 34,
        pub pad: [u8; 5] = 35,
        pub senders: u64 = 40,
    }
}

abi::wire_struct! {
    /// One mapping of a shared-region record.
    #[repr(C)]
    pub struct RegionMapping(8) {
        pub partition: u16 = 0,
        pub writable: u8 = 2,
        pub pad: [u8; 5] = 3,
    }
}

abi::wire_struct! {
    /// A shared-region record.
    #[repr(C)]
    pub struct RegionEntry(112) {
        pub name: [u8; NAME_LEN] = 0,
        pub size: u64 = 32,
        pub mapping_count: u8 = 40,
        /// A [`Cache`].
        pub cache: u8 = 41,
        /// [`NO_DMA_OWNER`] for none.
        pub dma_owner: u16 = 42,
        pub pad: [u8; 4] = 44,
        pub mappings: [RegionMapping; MAX_REGION_MAPPINGS] = 48,
    }
}

abi::wire_struct! {
    /// A DMA-region record.
    #[repr(C)]
    pub struct DmaEntry(48) {
        pub name: [u8; NAME_LEN] = 0,
        pub owner: u16 = 32,
        pub pad: [u8; 6] = 34,
        pub size: u64 = 40,
    }
}

abi::wire_struct! {
    /// An MMIO range of a device record.
    #[repr(C)]
    pub struct MmioEntry(16) {
        pub base: u64 = 0,
        pub size: u32 = 8,
        /// A [`Cache`].
        pub cache: u8 = 12,
        pub pad: u8 = 13,
        pub offset: u16 = 14,
    }
}

abi::wire_struct! {
    /// An I/O port range of a device record.
    #[repr(C)]
    pub struct IoEntry(4) {
        pub first: u16 = 0,
        pub count: u16 = 2,
    }
}

abi::wire_struct! {
    /// A device record (see [`DeviceRecord`]).
    #[repr(C)]
    pub struct DeviceEntry(128) {
        pub name: [u8; NAME_LEN] = 0,
        pub owner: u16 = 32,
        /// Bit 0 PCI, bit 1 PCI address given, bit 2 PCI id given.
        pub flags: u8 = 34,
        pub mmio_count: u8 = 35,
        pub io_count: u8 = 36,
        pub irq_count: u8 = 37,
        pub msix: u16 = 38,
        pub bus: u8 = 40,
        pub device: u8 = 41,
        pub function: u8 = 42,
        pub irq_bit: u8 = 43,
        pub vendor_id: u16 = 44,
        pub device_id: u16 = 46,
        pub mmio: [MmioEntry; MAX_DEVICE_MMIO] = 48,
        pub io: [IoEntry; MAX_DEVICE_IO] = 80,
        pub irqs: [u32; MAX_DEVICE_IRQS] = 96,
        pub reserved: [u8; 16] = 112,
    }
}

/// The name field of a record: `name` cut to [`NAME_LEN`] bytes, NUL-padded.
pub fn name_field(name: &str) -> [u8; NAME_LEN] {
    let mut field = [0; NAME_LEN];
    let b = &name.as_bytes()[..name.len().min(NAME_LEN)];
    field[..b.len()].copy_from_slice(b);
    field
}

/// The NUL-padded name at the start of a record, if it is non-empty UTF-8.
fn name_at(record: &[u8]) -> Option<&str> {
    let field = record.get(..NAME_LEN)?;
    let len = field.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
    core::str::from_utf8(&field[..len])
        .ok()
        .filter(|n| !n.is_empty())
}

/// `bytes[at..at+len]` if it lies inside `bytes`.
fn range(bytes: &[u8], at: usize, len: usize) -> Option<&[u8]> {
    bytes.get(at..at.checked_add(len)?)
}

impl<'a> SystemImage<'a> {
    /// Whether `bytes` starts like a system image (to tell it from other boot payloads).
    pub fn is_image(bytes: &[u8]) -> bool {
        bytes.starts_with(&MAGIC)
    }

    /// Validates the header, the tables and every record.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ImageError> {
        let header: Header = read_at(bytes, 0).ok_or(ImageError::TooShort)?;
        if header.magic != MAGIC {
            return Err(ImageError::BadMagic);
        }
        let total = header.total as usize;
        if total > bytes.len() || total < HEADER_SIZE {
            return Err(ImageError::BadSize);
        }
        let bytes = &bytes[..total];
        let partition_count = usize::from(header.partition_count);
        let window_count = usize::from(header.window_count);
        let partitions_at = header.partitions_at as usize;
        let windows_at = header.windows_at as usize;
        range(
            bytes,
            partitions_at,
            partition_count * PARTITION_RECORD_SIZE,
        )
        .ok_or(ImageError::TableOutOfBounds)?;
        range(bytes, windows_at, window_count * WINDOW_RECORD_SIZE)
            .ok_or(ImageError::TableOutOfBounds)?;
        let cmdline = range(
            bytes,
            header.cmdline_at as usize,
            header.cmdline_len as usize,
        )
        .ok_or(ImageError::TableOutOfBounds)?;
        let cmdline = core::str::from_utf8(cmdline).map_err(|_| ImageError::TableOutOfBounds)?;
        let (channels_at, channel_count) = (
            header.channels_at as usize,
            usize::from(header.channel_count),
        );
        let (notifications_at, notification_count) = (
            header.notifications_at as usize,
            usize::from(header.notification_count),
        );
        range(bytes, channels_at, channel_count * CHANNEL_RECORD_SIZE)
            .ok_or(ImageError::TableOutOfBounds)?;
        range(
            bytes,
            notifications_at,
            notification_count * NOTIFICATION_RECORD_SIZE,
        )
        .ok_or(ImageError::TableOutOfBounds)?;
        let (regions_at, region_count) =
            (header.regions_at as usize, usize::from(header.region_count));
        range(bytes, regions_at, region_count * REGION_RECORD_SIZE)
            .ok_or(ImageError::TableOutOfBounds)?;
        let (dma_at, dma_count) = (header.dma_at as usize, usize::from(header.dma_count));
        range(bytes, dma_at, dma_count * DMA_RECORD_SIZE).ok_or(ImageError::TableOutOfBounds)?;
        let (devices_at, device_count) =
            (header.devices_at as usize, usize::from(header.device_count));
        range(bytes, devices_at, device_count * DEVICE_RECORD_SIZE)
            .ok_or(ImageError::TableOutOfBounds)?;
        let image = Self {
            bytes,
            partition_count,
            window_count,
            partitions_at,
            windows_at,
            major_frame_ns: header.major_frame_ns,
            cmdline,
            channels_at,
            channel_count,
            notifications_at,
            notification_count,
            regions_at,
            region_count,
            dma_at,
            dma_count,
            devices_at,
            device_count,
        };
        for i in 0..partition_count {
            image.partition(i)?;
        }
        for i in 0..window_count {
            image.window(i)?;
        }
        for i in 0..channel_count {
            image.channel(i)?;
        }
        for i in 0..notification_count {
            image.notification(i)?;
        }
        for i in 0..region_count {
            image.region(i)?;
        }
        for i in 0..dma_count {
            image.dma(i)?;
        }
        for i in 0..device_count {
            image.device(i)?;
        }
        Ok(image)
    }

    /// The kernel command line carried by the image.
    pub fn cmdline(&self) -> &'a str {
        self.cmdline
    }

    /// The length of the cyclic schedule.
    pub fn major_frame_ns(&self) -> u64 {
        self.major_frame_ns
    }

    /// Number of partitions.
    pub fn partition_count(&self) -> usize {
        self.partition_count
    }

    /// Number of windows.
    pub fn window_count(&self) -> usize {
        self.window_count
    }

    /// Partition `index`.
    pub fn partition(&self, index: usize) -> Result<PartitionRecord<'a>, ImageError> {
        let bad = ImageError::BadPartition(index);
        if index >= self.partition_count {
            return Err(bad);
        }
        let at = self.partitions_at + index * PARTITION_RECORD_SIZE;
        let r: PartitionEntry = read_at(self.bytes, at).ok_or(bad)?;
        let name = name_at(&self.bytes[at..]).ok_or(bad)?;
        let elf = range(self.bytes, r.elf_at as usize, r.elf_len as usize).ok_or(bad)?;
        let policy = match r.policy {
            0 => HealthPolicy::Stop,
            1 => HealthPolicy::Restart {
                max_restarts: r.max_restarts,
                period_ns: r.period_ns,
            },
            2 => HealthPolicy::Halt,
            _ => return Err(bad),
        };
        let config = range(self.bytes, r.config_at as usize, r.config_len as usize).ok_or(bad)?;
        Ok(PartitionRecord {
            name,
            elf,
            config,
            memory_bytes: r.memory_bytes,
            stack_bytes: r.stack_bytes,
            priority: r.priority,
            policy,
            background: r.flags & 1 != 0,
        })
    }

    /// Number of devices.
    pub fn device_count(&self) -> usize {
        self.device_count
    }

    /// Device `index`; its owner is checked against the partition table, its counts against
    /// the record's room, its MMIO ranges to be whole pages and its interrupts to fit the
    /// owner's 64 notification bits.
    pub fn device(&self, index: usize) -> Result<DeviceRecord<'a>, ImageError> {
        let bad = ImageError::BadDevice(index);
        if index >= self.device_count {
            return Err(bad);
        }
        let at = self.devices_at + index * DEVICE_RECORD_SIZE;
        let r: DeviceEntry = read_at(self.bytes, at).ok_or(bad)?;
        let flags = r.flags;
        let mut d = DeviceRecord {
            name: name_at(&self.bytes[at..]).ok_or(bad)?,
            owner: r.owner,
            mmio_count: usize::from(r.mmio_count),
            io_count: usize::from(r.io_count),
            irq_count: usize::from(r.irq_count),
            msix: r.msix,
            irq_bit: r.irq_bit,
            ..DeviceRecord::default()
        };
        if flags & 1 != 0 {
            d.pci = Some(PciRecord {
                address: (flags & 2 != 0).then_some((r.bus, r.device, r.function)),
                id: (flags & 4 != 0).then_some((r.vendor_id, r.device_id)),
            });
        }
        if d.owner as usize >= self.partition_count
            || d.mmio_count > MAX_DEVICE_MMIO
            || d.io_count > MAX_DEVICE_IO
            || d.irq_count > MAX_DEVICE_IRQS
            || (d.msix > 0 && d.pci.is_none())
            || d.irq_bit as usize + d.irq_bit_count() > 64
        {
            return Err(bad);
        }
        for (m, e) in d.mmio.iter_mut().zip(r.mmio).take(d.mmio_count) {
            *m = MmioRecord {
                base: e.base,
                size: e.size,
                cache: Cache::from_byte(e.cache).ok_or(bad)?,
                offset: e.offset,
            };
            if m.size == 0
                || !m.base.is_multiple_of(4096)
                || !m.size.is_multiple_of(4096)
                || u32::from(m.offset) >= m.size
            {
                return Err(bad);
            }
        }
        for (io, e) in d.io_ports.iter_mut().zip(r.io).take(d.io_count) {
            *io = (e.first, e.count);
            if io.1 == 0 || io.0 as u32 + io.1 as u32 > 0x1_0000 {
                return Err(bad);
            }
        }
        for (irq, e) in d.irqs.iter_mut().zip(r.irqs).take(d.irq_count) {
            *irq = e;
        }
        Ok(d)
    }

    /// Number of channels.
    pub fn channel_count(&self) -> usize {
        self.channel_count
    }

    /// Number of DMA regions.
    pub fn dma_count(&self) -> usize {
        self.dma_count
    }

    /// DMA region `index`; its owner is checked against the partition table, its size to be
    /// a non-zero multiple of 4 KiB.
    pub fn dma(&self, index: usize) -> Result<DmaRecord<'a>, ImageError> {
        let bad = ImageError::BadDma(index);
        if index >= self.dma_count {
            return Err(bad);
        }
        let at = self.dma_at + index * DMA_RECORD_SIZE;
        let r: DmaEntry = read_at(self.bytes, at).ok_or(bad)?;
        let d = DmaRecord {
            name: name_at(&self.bytes[at..]).ok_or(bad)?,
            owner: r.owner,
            size: r.size,
        };
        if d.owner as usize >= self.partition_count || d.size == 0 || !d.size.is_multiple_of(4096) {
            return Err(bad);
        }
        Ok(d)
    }

    /// Number of shared regions.
    pub fn region_count(&self) -> usize {
        self.region_count
    }

    /// Shared region `index`; its partitions are checked against the partition table, its size
    /// to be a non-zero multiple of 4 KiB.
    pub fn region(&self, index: usize) -> Result<RegionRecord<'a>, ImageError> {
        let bad = ImageError::BadRegion(index);
        if index >= self.region_count {
            return Err(bad);
        }
        let at = self.regions_at + index * REGION_RECORD_SIZE;
        let r: RegionEntry = read_at(self.bytes, at).ok_or(bad)?;
        let mapping_count = usize::from(r.mapping_count);
        let size = r.size;
        if mapping_count == 0
            || mapping_count > MAX_REGION_MAPPINGS
            || size == 0
            || !size.is_multiple_of(4096)
        {
            return Err(bad);
        }
        let mut mappings = [(0u16, false); MAX_REGION_MAPPINGS];
        for (m, e) in mappings.iter_mut().zip(r.mappings).take(mapping_count) {
            *m = (e.partition, e.writable != 0);
            if m.0 as usize >= self.partition_count {
                return Err(bad);
            }
        }
        let dma_owner = match r.dma_owner {
            NO_DMA_OWNER => None,
            owner if mappings[..mapping_count].iter().any(|m| m.0 == owner) => Some(owner),
            _ => return Err(bad),
        };
        Ok(RegionRecord {
            name: name_at(&self.bytes[at..]).ok_or(bad)?,
            size,
            mappings,
            mapping_count,
            cache: Cache::from_byte(r.cache).ok_or(bad)?,
            dma_owner,
        })
    }

    /// Number of notifications.
    pub fn notification_count(&self) -> usize {
        self.notification_count
    }

    /// Channel `index`; its partitions are checked against the partition table.
    pub fn channel(&self, index: usize) -> Result<ChannelRecord<'a>, ImageError> {
        let bad = ImageError::BadChannel(index);
        if index >= self.channel_count {
            return Err(bad);
        }
        let at = self.channels_at + index * CHANNEL_RECORD_SIZE;
        let r: ChannelEntry = read_at(self.bytes, at).ok_or(bad)?;
        let c = ChannelRecord {
            name: name_at(&self.bytes[at..]).ok_or(bad)?,
            client: r.client,
            server: r.server,
            message_size: r.message_size,
        };
        let known = |p: u16| (p as usize) < self.partition_count;
        if !known(c.client) || !known(c.server) || c.client == c.server || c.message_size == 0 {
            return Err(bad);
        }
        Ok(c)
    }

    /// Notification `index`; its partitions are checked against the partition table.
    pub fn notification(&self, index: usize) -> Result<NotificationRecord<'a>, ImageError> {
        let bad = ImageError::BadNotification(index);
        if index >= self.notification_count {
            return Err(bad);
        }
        let at = self.notifications_at + index * NOTIFICATION_RECORD_SIZE;
        let r: NotificationEntry = read_at(self.bytes, at).ok_or(bad)?;
        let n = NotificationRecord {
            name: name_at(&self.bytes[at..]).ok_or(bad)?,
            receiver: r.receiver,
            bit: r.bit,
            senders: r.senders,
        };
        let senders_known = self.partition_count >= 64 || n.senders >> self.partition_count == 0;
        if n.receiver as usize >= self.partition_count || n.bit >= 64 || !senders_known {
            return Err(bad);
        }
        Ok(n)
    }

    /// Window `index`; its partition index is checked against the partition table.
    pub fn window(&self, index: usize) -> Result<WindowRecord, ImageError> {
        if index >= self.window_count {
            return Err(ImageError::BadWindow(index));
        }
        let at = self.windows_at + index * WINDOW_RECORD_SIZE;
        let r: WindowEntry = read_at(self.bytes, at).ok_or(ImageError::BadWindow(index))?;
        let w = WindowRecord {
            partition: r.partition,
            offset_ns: r.offset_ns,
            length_ns: r.length_ns,
        };
        if w.partition as usize >= self.partition_count {
            return Err(ImageError::BadWindow(index));
        }
        Ok(w)
    }
}

/// Builds images (host side).
#[cfg(feature = "alloc")]
pub mod builder {
    use alloc::vec::Vec;

    use super::*;
    use crate::wire::Wire;

    /// What partitions may share and talk over, beside the partitions and windows.
    #[derive(Clone, Copy, Debug, Default)]
    pub struct Tables<'a> {
        pub channels: &'a [ChannelRecord<'a>],
        pub notifications: &'a [NotificationRecord<'a>],
        pub regions: &'a [RegionRecord<'a>],
        pub dma: &'a [DmaRecord<'a>],
        pub devices: &'a [DeviceRecord<'a>],
    }

    /// A partition to put in an image.
    #[derive(Clone, Debug)]
    pub struct PartitionSpec {
        pub name: alloc::string::String,
        pub elf: Vec<u8>,
        pub memory_bytes: u64,
        pub stack_bytes: u32,
        pub priority: u8,
        pub policy: HealthPolicy,
        pub background: bool,
        /// Configuration the partition reads with `partition_config`: the typed records of
        /// `bulkhead_rt::config`, which the kernel passes on without looking at them.
        pub config: Vec<u8>,
    }

    /// Lays out an image with the given command line, schedule and partitions.
    pub fn build(
        cmdline: &str,
        major_frame_ns: u64,
        partitions: &[PartitionSpec],
        windows: &[WindowRecord],
    ) -> Vec<u8> {
        build_with_ipc(
            cmdline,
            major_frame_ns,
            partitions,
            windows,
            &Tables::default(),
        )
    }

    /// Lays out an image with everything, channels and notifications included.
    pub fn build_with_ipc(
        cmdline: &str,
        major_frame_ns: u64,
        partitions: &[PartitionSpec],
        windows: &[WindowRecord],
        tables: &Tables<'_>,
    ) -> Vec<u8> {
        let Tables {
            channels,
            notifications,
            regions,
            dma,
            devices,
        } = *tables;
        let partitions_at = HEADER_SIZE;
        let windows_at = partitions_at + partitions.len() * PARTITION_RECORD_SIZE;
        let channels_at = windows_at + windows.len() * WINDOW_RECORD_SIZE;
        let notifications_at = channels_at + channels.len() * CHANNEL_RECORD_SIZE;
        let regions_at = notifications_at + notifications.len() * NOTIFICATION_RECORD_SIZE;
        let dma_at = regions_at + regions.len() * REGION_RECORD_SIZE;
        let devices_at = dma_at + dma.len() * DMA_RECORD_SIZE;
        let cmdline_at = devices_at + devices.len() * DEVICE_RECORD_SIZE;
        let mut out = alloc::vec![0; (cmdline_at + cmdline.len()).next_multiple_of(8)];
        out[cmdline_at..cmdline_at + cmdline.len()].copy_from_slice(cmdline.as_bytes());
        let mut config_at = Vec::new();
        for p in partitions {
            config_at.push(out.len());
            out.extend_from_slice(&p.config);
            out.resize(out.len().next_multiple_of(8), 0);
        }
        let mut elf_at = Vec::new();
        for p in partitions {
            elf_at.push(out.len());
            out.extend_from_slice(&p.elf);
            out.resize(out.len().next_multiple_of(8), 0);
        }
        Header {
            magic: MAGIC,
            total: out.len() as u32,
            partition_count: partitions.len() as u16,
            window_count: windows.len() as u16,
            major_frame_ns,
            partitions_at: partitions_at as u32,
            windows_at: windows_at as u32,
            cmdline_at: cmdline_at as u32,
            cmdline_len: cmdline.len() as u32,
            channels_at: channels_at as u32,
            channel_count: channels.len() as u16,
            notification_count: notifications.len() as u16,
            notifications_at: notifications_at as u32,
            regions_at: regions_at as u32,
            region_count: regions.len() as u16,
            dma_at: dma_at as u32,
            dma_count: dma.len() as u16,
            devices_at: devices_at as u32,
            device_count: devices.len() as u16,
            ..Header::default()
        }
        .write(&mut out, 0);
        for (i, c) in channels.iter().enumerate() {
            ChannelEntry {
                name: name_field(c.name),
                client: c.client,
                server: c.server,
                message_size: c.message_size,
                ..ChannelEntry::default()
            }
            .write(&mut out, channels_at + i * CHANNEL_RECORD_SIZE);
        }
        for (i, n) in notifications.iter().enumerate() {
            NotificationEntry {
                name: name_field(n.name),
                receiver: n.receiver,
                bit: n.bit,
                senders: n.senders,
                ..NotificationEntry::default()
            }
            .write(&mut out, notifications_at + i * NOTIFICATION_RECORD_SIZE);
        }
        for (i, d) in dma.iter().enumerate() {
            DmaEntry {
                name: name_field(d.name),
                owner: d.owner,
                size: d.size,
                ..DmaEntry::default()
            }
            .write(&mut out, dma_at + i * DMA_RECORD_SIZE);
        }
        for (i, r) in regions.iter().enumerate() {
            let mut entry = RegionEntry {
                name: name_field(r.name),
                size: r.size,
                mapping_count: r.mapping_count as u8,
                cache: r.cache as u8,
                dma_owner: r.dma_owner.unwrap_or(NO_DMA_OWNER),
                ..RegionEntry::default()
            };
            for (e, &(partition, writable)) in entry
                .mappings
                .iter_mut()
                .zip(&r.mappings)
                .take(r.mapping_count)
            {
                *e = RegionMapping {
                    partition,
                    writable: writable as u8,
                    ..RegionMapping::default()
                };
            }
            entry.write(&mut out, regions_at + i * REGION_RECORD_SIZE);
        }
        for (i, p) in partitions.iter().enumerate() {
            let (policy, max_restarts, period_ns) = match p.policy {
                HealthPolicy::Stop => (0u8, 0u32, 0u64),
                HealthPolicy::Restart {
                    max_restarts,
                    period_ns,
                } => (1, max_restarts, period_ns),
                HealthPolicy::Halt => (2, 0, 0),
            };
            PartitionEntry {
                name: name_field(&p.name),
                elf_at: elf_at[i] as u32,
                elf_len: p.elf.len() as u32,
                memory_bytes: p.memory_bytes,
                stack_bytes: p.stack_bytes,
                priority: p.priority,
                policy,
                flags: p.background as u8,
                max_restarts,
                period_ns,
                config_at: config_at[i] as u32,
                config_len: p.config.len() as u32,
                ..PartitionEntry::default()
            }
            .write(&mut out, partitions_at + i * PARTITION_RECORD_SIZE);
        }
        for (i, d) in devices.iter().enumerate() {
            let pci = d.pci.unwrap_or_default();
            let (bus, device, function) = pci.address.unwrap_or_default();
            let (vendor_id, device_id) = pci.id.unwrap_or_default();
            let mut entry = DeviceEntry {
                name: name_field(d.name),
                owner: d.owner,
                flags: d.pci.is_some() as u8
                    | (pci.address.is_some() as u8) << 1
                    | (pci.id.is_some() as u8) << 2,
                mmio_count: d.mmio_count as u8,
                io_count: d.io_count as u8,
                irq_count: d.irq_count as u8,
                msix: d.msix,
                bus,
                device,
                function,
                irq_bit: d.irq_bit,
                vendor_id,
                device_id,
                ..DeviceEntry::default()
            };
            for (e, m) in entry.mmio.iter_mut().zip(&d.mmio).take(d.mmio_count) {
                *e = MmioEntry {
                    base: m.base,
                    size: m.size,
                    cache: m.cache as u8,
                    pad: 0,
                    offset: m.offset,
                };
            }
            for (e, &(first, count)) in entry.io.iter_mut().zip(&d.io_ports).take(d.io_count) {
                *e = IoEntry { first, count };
            }
            for (e, &irq) in entry.irqs.iter_mut().zip(&d.irqs).take(d.irq_count) {
                *e = irq;
            }
            entry.write(&mut out, devices_at + i * DEVICE_RECORD_SIZE);
        }
        for (i, w) in windows.iter().enumerate() {
            WindowEntry {
                partition: w.partition,
                offset_ns: w.offset_ns,
                length_ns: w.length_ns,
                ..WindowEntry::default()
            }
            .write(&mut out, windows_at + i * WINDOW_RECORD_SIZE);
        }
        out
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::builder::PartitionSpec;
    use super::*;
    use std::vec;

    fn sample() -> std::vec::Vec<u8> {
        let parts = [
            PartitionSpec {
                name: "alpha".into(),
                elf: vec![0x7f, b'E', b'L', b'F', 1, 2, 3],
                memory_bytes: 1 << 20,
                stack_bytes: 16384,
                priority: 10,
                policy: HealthPolicy::Restart {
                    max_restarts: 5,
                    period_ns: 1_000_000_000,
                },
                background: false,
                config: b"queue-depth = 64\n".to_vec(),
            },
            PartitionSpec {
                name: "beta".into(),
                elf: vec![9; 20],
                memory_bytes: 2 << 20,
                stack_bytes: 8192,
                priority: 3,
                policy: HealthPolicy::Halt,
                background: true,
                config: Vec::new(),
            },
        ];
        let windows = [WindowRecord {
            partition: 0,
            offset_ns: 0,
            length_ns: 5_000_000,
        }];
        let channels = [ChannelRecord {
            name: "a-to-b",
            client: 0,
            server: 1,
            message_size: 256,
        }];
        let notifications = [NotificationRecord {
            name: "kick",
            receiver: 1,
            bit: 5,
            senders: 0b01,
        }];
        let mut mappings = [(0u16, false); MAX_REGION_MAPPINGS];
        mappings[0] = (0, true);
        mappings[1] = (1, false);
        let regions = [RegionRecord {
            name: "ring",
            size: 8192,
            mappings,
            mapping_count: 2,
            cache: Cache::Uncached,
            dma_owner: Some(1),
        }];
        let mut disk = DeviceRecord {
            name: "disk0",
            owner: 1,
            pci: Some(PciRecord {
                address: Some((0, 4, 0)),
                id: Some((0x1af4, 0x1001)),
            }),
            io_count: 1,
            irq_count: 1,
            msix: 2,
            irq_bit: 1,
            ..DeviceRecord::default()
        };
        disk.io_ports[0] = (0x2f8, 8);
        disk.irqs[0] = 11;
        let mut uart = DeviceRecord {
            name: "uart",
            owner: 0,
            mmio_count: 1,
            ..DeviceRecord::default()
        };
        uart.mmio[0] = MmioRecord {
            base: 0x0900_0000,
            size: 4096,
            cache: Cache::Device,
            offset: 0xe00,
        };
        super::builder::build_with_ipc(
            "log=debug exit",
            10_000_000,
            &parts,
            &windows,
            &super::builder::Tables {
                channels: &channels,
                notifications: &notifications,
                regions: &regions,
                dma: &[DmaRecord {
                    name: "rx",
                    owner: 1,
                    size: 16384,
                }],
                devices: &[disk, uart],
            },
        )
    }

    #[test]
    fn round_trip() {
        let bytes = sample();
        let img = SystemImage::parse(&bytes).unwrap();
        assert_eq!(img.cmdline(), "log=debug exit");
        assert_eq!(img.major_frame_ns(), 10_000_000);
        assert_eq!(img.partition_count(), 2);
        let a = img.partition(0).unwrap();
        assert_eq!(
            (
                a.name,
                a.elf.len(),
                a.memory_bytes,
                a.stack_bytes,
                a.priority
            ),
            ("alpha", 7, 1 << 20, 16384, 10)
        );
        assert_eq!(
            a.policy,
            HealthPolicy::Restart {
                max_restarts: 5,
                period_ns: 1_000_000_000
            }
        );
        let b = img.partition(1).unwrap();
        assert!(b.background && b.policy == HealthPolicy::Halt && b.elf == [9; 20]);
        assert_eq!(img.window(0).unwrap().length_ns, 5_000_000);
        assert_eq!(
            img.channel(0).unwrap(),
            ChannelRecord {
                name: "a-to-b",
                client: 0,
                server: 1,
                message_size: 256
            }
        );
        assert_eq!(
            img.notification(0).unwrap(),
            NotificationRecord {
                name: "kick",
                receiver: 1,
                bit: 5,
                senders: 1
            }
        );
        assert_eq!(img.channel(1), Err(ImageError::BadChannel(1)));
        assert_eq!(
            img.dma(0).unwrap(),
            DmaRecord {
                name: "rx",
                owner: 1,
                size: 16384
            }
        );
        let r = img.region(0).unwrap();
        assert_eq!(
            (
                r.name,
                r.size,
                r.mapping_count,
                r.mappings[0],
                r.mappings[1]
            ),
            ("ring", 8192, 2, (0, true), (1, false))
        );
        assert_eq!(r.cache, Cache::Uncached);
        assert_eq!(r.dma_owner, Some(1));
        assert_eq!(img.partition(2), Err(ImageError::BadPartition(2)));
        assert_eq!(a.config, b"queue-depth = 64\n");
        assert!(b.config.is_empty());
        assert_eq!(img.device_count(), 2);
        let disk = img.device(0).unwrap();
        assert_eq!(
            disk.pci,
            Some(PciRecord {
                address: Some((0, 4, 0)),
                id: Some((0x1af4, 0x1001))
            })
        );
        assert_eq!((disk.owner, disk.msix, disk.irq_bit), (1, 2, 1));
        assert_eq!(
            (disk.io_ports[0], disk.irqs[0], disk.irq_bit_count()),
            ((0x2f8, 8), 11, 3)
        );
        let uart = img.device(1).unwrap();
        assert_eq!(
            (
                uart.pci,
                uart.mmio_count,
                uart.mmio[0].cache,
                uart.mmio[0].offset
            ),
            (None, 1, Cache::Device, 0xe00)
        );
        assert_eq!(img.device(2), Err(ImageError::BadDevice(2)));
    }

    #[test]
    fn rejects_malformed_devices() {
        let good = sample();
        let img = SystemImage::parse(&good).unwrap();
        let at = img.devices_at;
        // Interrupt bits past the 64-bit word.
        let mut b = good.clone();
        b[at + 43] = 62;
        assert_eq!(
            SystemImage::parse(&b).unwrap_err(),
            ImageError::BadDevice(0)
        );
        // An owner that does not exist.
        let mut b = good.clone();
        b[at + 32] = 9;
        assert_eq!(
            SystemImage::parse(&b).unwrap_err(),
            ImageError::BadDevice(0)
        );
        // An MMIO range that is not whole pages.
        let mut b = good.clone();
        let uart = at + DEVICE_RECORD_SIZE;
        b[uart + 56..uart + 60].copy_from_slice(&100u32.to_le_bytes());
        assert_eq!(
            SystemImage::parse(&b).unwrap_err(),
            ImageError::BadDevice(1)
        );
        // An I/O range running past port 0xffff.
        let mut b = good.clone();
        b[at + 80..at + 82].copy_from_slice(&0xfffcu16.to_le_bytes());
        assert_eq!(
            SystemImage::parse(&b).unwrap_err(),
            ImageError::BadDevice(0)
        );
        // MSI-X on a device that is not PCI.
        let mut b = good.clone();
        b[uart + 38] = 1;
        assert_eq!(
            SystemImage::parse(&b).unwrap_err(),
            ImageError::BadDevice(1)
        );
    }

    #[test]
    fn region_dma_owner() {
        let good = sample();
        let img = SystemImage::parse(&good).unwrap();
        let at = img.regions_at;
        // No owner.
        let mut b = good.clone();
        b[at + 42..at + 44].copy_from_slice(&NO_DMA_OWNER.to_le_bytes());
        assert_eq!(
            SystemImage::parse(&b).unwrap().region(0).unwrap().dma_owner,
            None
        );
        // The other mapper.
        b[at + 42..at + 44].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(
            SystemImage::parse(&b).unwrap().region(0).unwrap().dma_owner,
            Some(0)
        );
        // An owner that does not map the region (partition 2 does not even exist).
        b[at + 42..at + 44].copy_from_slice(&2u16.to_le_bytes());
        assert_eq!(
            SystemImage::parse(&b).unwrap_err(),
            ImageError::BadRegion(0)
        );
    }

    #[test]
    fn rejects_corruption() {
        let good = sample();
        assert_eq!(
            SystemImage::parse(&good[..10]).unwrap_err(),
            ImageError::TooShort
        );
        let mut b = good.clone();
        b[0] = b'X';
        assert_eq!(SystemImage::parse(&b).unwrap_err(), ImageError::BadMagic);
        let mut b = good.clone();
        b[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(SystemImage::parse(&b).unwrap_err(), ImageError::BadSize);
        let mut b = good.clone();
        b[12..14].copy_from_slice(&1000u16.to_le_bytes());
        assert_eq!(
            SystemImage::parse(&b).unwrap_err(),
            ImageError::TableOutOfBounds
        );
        let mut b = good.clone();
        b[HEADER_SIZE + 36..HEADER_SIZE + 40].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            SystemImage::parse(&b).unwrap_err(),
            ImageError::BadPartition(0)
        );
        let mut b = good.clone();
        let w = HEADER_SIZE + 2 * PARTITION_RECORD_SIZE;
        b[w..w + 4].copy_from_slice(&7u32.to_le_bytes());
        let c = w + WINDOW_RECORD_SIZE;
        let mut bad_channel = good.clone();
        bad_channel[c + 34..c + 36].copy_from_slice(&0u16.to_le_bytes()); // server == client
        assert_eq!(
            SystemImage::parse(&bad_channel).unwrap_err(),
            ImageError::BadChannel(0)
        );
        let n = c + CHANNEL_RECORD_SIZE;
        let mut bad_notification = good.clone();
        bad_notification[n + 40..n + 48].copy_from_slice(&0b100u64.to_le_bytes()); // no partition 2
        assert_eq!(
            SystemImage::parse(&bad_notification).unwrap_err(),
            ImageError::BadNotification(0)
        );
        assert_eq!(
            SystemImage::parse(&b).unwrap_err(),
            ImageError::BadWindow(0)
        );
    }

    #[test]
    fn mutations_never_panic() {
        let good = sample();
        let mut seed = 0x1234_5678_9abc_def1u64;
        for _ in 0..20_000 {
            let mut b = good.clone();
            for _ in 0..3 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = (seed % b.len() as u64) as usize;
                b[i] = (seed >> 24) as u8;
            }
            if let Ok(img) = SystemImage::parse(&b) {
                for i in 0..img.partition_count() {
                    assert!(img.partition(i).is_ok(), "parse validated every record");
                }
            }
        }
    }
}
