//! The system-call ABI between the Bulkhead kernel and partitions.
//!
//! Calling convention. x86_64: `syscall` with the number in `rax` and arguments in `rdi`,
//! `rsi`, `rdx`, `r10`, `r8`; the result comes back in `rax` (and a second value in `rdx`);
//! `rcx` and `r11` are clobbered. aarch64: `svc #0` with the number in `x8` and arguments in
//! `x0`-`x4`; results in `x0` and `x1`.
//!
//! Every syscall returns one word: a value `< ERROR_BASE`, or an encoded [`SysError`]. Like
//! Hubris's kernel errors, each error says whose fault it is: the caller's (a bad argument it
//! could have known was bad) or the system's state (a peer that is not there).
#![no_std]
#![forbid(unsafe_code)]

pub mod wire;

use wire::Wire;

/// The wire layouts of the records system calls pass through memory: `#[repr(C)]` structs of
/// little-endian integers with explicit padding, their size and offsets asserted at compile
/// time. The friendlier types ([`DmaInfo`](crate::DmaInfo), ...) encode into and decode from
/// them.
pub mod layout {
    use crate::MAX_DEVICE_WINDOWS;
    use crate::wire::Wire;

    /// `value` encoded into an array of exactly its size.
    pub(crate) fn encode<T: Wire, const N: usize>(value: T) -> [u8; N] {
        let mut b = [0; N];
        value.write(&mut b, 0);
        b
    }

    crate::wire_struct! {
        /// `dma_info`'s record.
        #[repr(C)]
        pub struct DmaInfo(24) {
            pub address: u64 = 0,
            pub phys: u64 = 8,
            pub size: u64 = 16,
        }
    }

    crate::wire_struct! {
        /// `region_info`'s record.
        #[repr(C)]
        pub struct RegionInfo(32) {
            pub address: u64 = 0,
            pub size: u64 = 8,
            /// 0 or 1.
            pub writable: u64 = 16,
            pub phys: u64 = 24,
        }
    }

    crate::wire_struct! {
        /// One window of `device_info`'s record.
        #[repr(C)]
        pub struct DeviceWindow(24) {
            /// A `WindowKind`.
            pub kind: u8 = 0,
            pub index: u8 = 1,
            pub port: u16 = 2,
            pub pad: [u8; 4] = 4,
            pub address: u64 = 8,
            pub size: u64 = 16,
        }
    }

    crate::wire_struct! {
        /// `device_info`'s record.
        #[repr(C)]
        pub struct DeviceInfo(24 + 24 * MAX_DEVICE_WINDOWS) {
            /// 0 or 1.
            pub is_pci: u8 = 0,
            pub pad0: u8 = 1,
            pub pci_address: u16 = 2,
            pub vendor_id: u16 = 4,
            pub device_id: u16 = 6,
            pub msix_vectors: u16 = 8,
            pub pad1: [u8; 6] = 10,
            pub irq_bits: u64 = 16,
            pub windows: [DeviceWindow; MAX_DEVICE_WINDOWS] = 24,
        }
    }

    crate::wire_struct! {
        /// `partition_info`'s record.
        #[repr(C)]
        pub struct PartitionInfo(16) {
            pub id: u32 = 0,
            pub generation: u32 = 4,
            pub memory_bytes: u64 = 8,
        }
    }
}

/// System call numbers.
#[repr(usize)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sysno {
    /// `log_write(ptr, len)`: writes bytes to the kernel log under the partition's name.
    LogWrite = 0,
    /// `yield()`: gives up the rest of this turn to threads of equal priority.
    Yield = 1,
    /// `sleep_until(ns)`: blocks until the monotonic clock reaches `ns`.
    SleepUntil = 2,
    /// `time_now() -> ns`: nanoseconds since boot.
    TimeNow = 3,
    /// `partition_info(ptr, len) -> bytes written`: fills a [`PartitionInfo`].
    PartitionInfo = 4,
    /// `exit(code)`: ends the partition; its health policy decides what follows.
    Exit = 5,
    /// `call(channel, msg_ptr, msg_len, reply_ptr, reply_cap) -> reply length`: sends a message
    /// to the channel's server and blocks until it replies.
    Call = 6,
    /// `recv(buf_ptr, buf_cap) -> RecvResult`: blocks until a call arrives on one of the
    /// caller's server channels; the message is copied into the buffer.
    Recv = 7,
    /// `reply(channel, msg_ptr, msg_len)`: answers the call being served on `channel`.
    Reply = 8,
    /// `reply_recv(channel, msg_ptr, msg_len, buf_ptr, buf_cap) -> RecvResult`: `reply` then
    /// `recv` in one entry.
    ReplyRecv = 9,
    /// `notify(notification)`: sets the notification's bit in its receiver's word.
    Notify = 10,
    /// `wait(mask) -> bits`: blocks until a bit in `mask` is set; returns and clears those bits.
    Wait = 11,
    /// `poll(mask) -> bits`: like `wait` without blocking (0 when none is set).
    Poll = 12,
    /// `lookup(kind, name_ptr, name_len) -> index`: the index of the channel (kind 0),
    /// notification (kind 1) or shared region (kind 2) of that name, if the system description
    /// grants it to the caller.
    Lookup = 13,
    /// `region_info(region, ptr, len) -> bytes written`: fills a [`RegionInfo`] for a shared
    /// region the caller maps (its physical address only for the region's DMA owner).
    RegionInfo = 14,
    /// `dma_info(region, ptr, len) -> bytes written`: fills a [`DmaInfo`] for a DMA region the
    /// caller owns. With `region_info` for a shared region whose DMA owner it is, the only ways
    /// a partition learns a physical address.
    DmaInfo = 15,
    /// `device_info(device, ptr, len) -> bytes written`: fills a [`DeviceInfo`] for a device
    /// granted to the caller: where its registers are mapped and which notification bits its
    /// interrupts raise.
    DeviceInfo = 16,
    /// `pci_config_read(device, offset, width) -> value`: reads 1, 2 or 4 bytes (aligned) of
    /// the configuration space of a PCI function granted to the caller.
    PciConfigRead = 17,
    /// `pci_config_write(device, offset, width, value)`: writes configuration space where the
    /// kernel's mediation allows (never BARs, interrupt routing or MSI/MSI-X control).
    PciConfigWrite = 18,
    /// `irq_ack(device, bits)`: the caller has handled the interrupts whose notification bits
    /// are in `bits`; the kernel unmasks those lines again.
    IrqAck = 19,
    /// `partition_config(ptr, len) -> bytes`: copies the caller's settings (its own
    /// `[partitions.NAME.config]` and, for a server, each channel's `config`, checked and
    /// defaulted when the image was built, as the typed records `bulkhead_rt::config` reads)
    /// into the buffer; returns their full length.
    PartitionConfig = 20,
}

/// Number of system calls: numbers `0..SYSCALL_COUNT` exist.
pub const SYSCALL_COUNT: usize = 21;

/// What `lookup` looks up.
#[repr(usize)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    Channel = 0,
    Notification = 1,
    SharedRegion = 2,
    DmaRegion = 3,
    Device = 4,
}

/// A DMA region as `dma_info` reports it to its owner.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DmaInfo {
    /// Where the region is mapped in the owner.
    pub address: u64,
    /// The physical (bus) address of its first byte; the region is physically contiguous.
    pub phys: u64,
    pub size: u64,
}

impl DmaInfo {
    /// Encoded size in bytes.
    pub const SIZE: usize = layout::DmaInfo::SIZE;

    /// Encodes into the wire layout ([`layout::DmaInfo`]).
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        layout::encode(layout::DmaInfo {
            address: self.address,
            phys: self.phys,
            size: self.size,
        })
    }

    /// Decodes from the wire layout.
    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let w: layout::DmaInfo = Wire::read(b, 0);
        Self {
            address: w.address,
            phys: w.phys,
            size: w.size,
        }
    }
}

/// Where a partition's DMA regions are mapped, each followed by an unmapped guard page.
pub const DMA_BASE: u64 = 0x2000_0000_0000;

/// Where a shared region is mapped in the caller, as `region_info` reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegionInfo {
    pub address: u64,
    pub size: u64,
    pub writable: bool,
    /// The physical (bus) address of its first byte (the region is physically contiguous),
    /// for the region's DMA owner as the system description names it (`dma-owner`); 0 for
    /// every other partition.
    pub phys: u64,
}

impl RegionInfo {
    /// Encoded size in bytes.
    pub const SIZE: usize = layout::RegionInfo::SIZE;

    /// Encodes into the wire layout ([`layout::RegionInfo`]).
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        layout::encode(layout::RegionInfo {
            address: self.address,
            size: self.size,
            writable: self.writable as u64,
            phys: self.phys,
        })
    }

    /// Decodes from the wire layout.
    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let w: layout::RegionInfo = Wire::read(b, 0);
        Self {
            address: w.address,
            size: w.size,
            writable: w.writable != 0,
            phys: w.phys,
        }
    }
}

/// Where devices' registers are mapped: device `i`'s windows lie in the
/// [`DEVICE_SLOT_SIZE`] bytes from `DEVICE_BASE + i * DEVICE_SLOT_SIZE`, each window followed by
/// an unmapped guard page.
pub const DEVICE_BASE: u64 = 0x3000_0000_0000;
/// Address space reserved for each device's windows.
pub const DEVICE_SLOT_SIZE: u64 = 0x10_0000_0000;

/// Most register windows a device reports.
pub const MAX_DEVICE_WINDOWS: usize = 8;

/// What a register window of a device is.
#[repr(u8)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WindowKind {
    /// No window in this slot.
    #[default]
    None = 0,
    /// A PCI memory BAR, mapped at `address` (uncached).
    MemoryBar = 1,
    /// A PCI I/O BAR: ports `port .. port + size`, granted in the caller's I/O bitmap (x86).
    IoBar = 2,
    /// An MMIO range of the description, mapped at `address` with its cache attribute.
    Mmio = 3,
    /// An I/O port range of the description (x86).
    IoPorts = 4,
}

/// One register window of a device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceWindow {
    pub kind: WindowKind,
    /// The BAR number for a BAR, the range's index for a description range.
    pub index: u8,
    /// First I/O port for I/O windows.
    pub port: u16,
    /// Bytes mapped in the caller from `address` (I/O windows: 0).
    pub address: u64,
    /// Size in bytes (ports for I/O windows). Pages that hold a PCI function's MSI-X table or
    /// pending-bit array are left unmapped: the kernel alone programs interrupt routing.
    pub size: u64,
}

/// A device as `device_info` reports it to its owner.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Whether the device is a PCI function (then `pci_config_*` work on it).
    pub is_pci: bool,
    /// `bus << 8 | device << 3 | function`.
    pub pci_address: u16,
    pub vendor_id: u16,
    pub device_id: u16,
    /// Number of MSI-X vectors the kernel enabled (0: the device interrupts by line).
    pub msix_vectors: u16,
    /// Notification bits raised by the device's interrupts: lines first, then MSI-X vectors in
    /// table order, each its own bit, upwards from the lowest set bit.
    pub irq_bits: u64,
    pub windows: [DeviceWindow; MAX_DEVICE_WINDOWS],
}

impl DeviceInfo {
    /// Encoded size in bytes.
    pub const SIZE: usize = layout::DeviceInfo::SIZE;

    /// Encodes into the wire layout ([`layout::DeviceInfo`]).
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        layout::encode(layout::DeviceInfo {
            is_pci: self.is_pci as u8,
            pci_address: self.pci_address,
            vendor_id: self.vendor_id,
            device_id: self.device_id,
            msix_vectors: self.msix_vectors,
            irq_bits: self.irq_bits,
            windows: self.windows.map(|w| layout::DeviceWindow {
                kind: w.kind as u8,
                index: w.index,
                port: w.port,
                address: w.address,
                size: w.size,
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// Decodes from the wire layout; an unknown window kind reads as [`WindowKind::None`].
    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let w: layout::DeviceInfo = Wire::read(b, 0);
        Self {
            is_pci: w.is_pci != 0,
            pci_address: w.pci_address,
            vendor_id: w.vendor_id,
            device_id: w.device_id,
            msix_vectors: w.msix_vectors,
            irq_bits: w.irq_bits,
            windows: w.windows.map(|w| DeviceWindow {
                kind: match w.kind {
                    1 => WindowKind::MemoryBar,
                    2 => WindowKind::IoBar,
                    3 => WindowKind::Mmio,
                    4 => WindowKind::IoPorts,
                    _ => WindowKind::None,
                },
                index: w.index,
                port: w.port,
                address: w.address,
                size: w.size,
            }),
        }
    }

    /// The window of memory BAR `bar`, if the device has one.
    pub fn memory_bar(&self, bar: u8) -> Option<&DeviceWindow> {
        self.windows
            .iter()
            .find(|w| w.kind == WindowKind::MemoryBar && w.index == bar)
    }

    /// The window of I/O BAR `bar`, if the device has one.
    pub fn io_bar(&self, bar: u8) -> Option<&DeviceWindow> {
        self.windows
            .iter()
            .find(|w| w.kind == WindowKind::IoBar && w.index == bar)
    }
}

/// Where shared regions are mapped: region `i` at the same address in every partition that
/// maps it, each region followed by an unmapped guard page.
pub const SHARED_BASE: u64 = 0x1000_0000_0000;

/// The result word of `recv`: the message length in the low 32 bits, the channel above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvResult {
    pub channel: u32,
    pub len: u32,
}

impl RecvResult {
    /// The word the kernel returns.
    pub fn encode(self) -> usize {
        ((self.channel as usize) << 32) | self.len as usize
    }

    /// Decodes a `recv` result word (already checked not to be an error).
    pub fn decode(word: usize) -> Self {
        RecvResult {
            channel: (word >> 32) as u32 & 0xffff,
            len: word as u32,
        }
    }
}

impl Sysno {
    /// Decodes a syscall number; `None` for numbers the kernel does not know.
    pub fn from_usize(n: usize) -> Option<Sysno> {
        Some(match n {
            0 => Sysno::LogWrite,
            1 => Sysno::Yield,
            2 => Sysno::SleepUntil,
            3 => Sysno::TimeNow,
            4 => Sysno::PartitionInfo,
            5 => Sysno::Exit,
            6 => Sysno::Call,
            7 => Sysno::Recv,
            8 => Sysno::Reply,
            9 => Sysno::ReplyRecv,
            10 => Sysno::Notify,
            11 => Sysno::Wait,
            12 => Sysno::Poll,
            13 => Sysno::Lookup,
            14 => Sysno::RegionInfo,
            15 => Sysno::DmaInfo,
            16 => Sysno::DeviceInfo,
            17 => Sysno::PciConfigRead,
            18 => Sysno::PciConfigWrite,
            19 => Sysno::IrqAck,
            20 => Sysno::PartitionConfig,
            _ => return None,
        })
    }
}

/// Return values at or above this are errors.
pub const ERROR_BASE: usize = usize::MAX - 0xffff;

/// Why a system call failed.
#[repr(usize)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SysError {
    /// The caller's fault: no such system call.
    UnknownSyscall = 1,
    /// The caller's fault: a pointer or length names memory the partition may not access
    /// (unmapped, kernel, another partition's, misaligned, wrapping).
    BadPointer = 2,
    /// The caller's fault: an argument is out of range.
    BadArgument = 3,
    /// The caller's fault: the object exists but was not granted to this partition.
    NotGranted = 4,
    /// The system's state: the peer restarted since the caller last used it.
    PeerRestarted = 5,
    /// The system's state: the peer is stopped.
    PeerStopped = 6,
}

impl SysError {
    /// Whether the error is the caller's own fault (as opposed to the system's state).
    pub fn is_callers_fault(self) -> bool {
        matches!(
            self,
            SysError::UnknownSyscall
                | SysError::BadPointer
                | SysError::BadArgument
                | SysError::NotGranted
        )
    }

    /// The word the kernel returns for this error.
    pub fn encode(self) -> usize {
        ERROR_BASE + self as usize
    }

    /// Decodes a syscall's return word.
    pub fn decode(word: usize) -> Result<usize, SysError> {
        if word < ERROR_BASE {
            return Ok(word);
        }
        Err(match word - ERROR_BASE {
            1 => SysError::UnknownSyscall,
            2 => SysError::BadPointer,
            3 => SysError::BadArgument,
            4 => SysError::NotGranted,
            5 => SysError::PeerRestarted,
            _ => SysError::PeerStopped,
        })
    }
}

/// What `partition_info` reports, in a fixed little-endian layout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Index of the partition in the system description.
    pub id: u32,
    /// Restarts so far (0 at first start).
    pub generation: u32,
    /// Memory budget in bytes.
    pub memory_bytes: u64,
}

impl PartitionInfo {
    /// Encoded size in bytes.
    pub const SIZE: usize = layout::PartitionInfo::SIZE;

    /// Encodes into the wire layout ([`layout::PartitionInfo`]).
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        layout::encode(layout::PartitionInfo {
            id: self.id,
            generation: self.generation,
            memory_bytes: self.memory_bytes,
        })
    }

    /// Decodes from the wire layout.
    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let w: layout::PartitionInfo = Wire::read(b, 0);
        Self {
            id: w.id,
            generation: w.generation,
            memory_bytes: w.memory_bytes,
        }
    }
}

/// Lowest user virtual address a partition's program may be linked at.
pub const USER_BASE: u64 = 0x40_0000;
/// One past the highest user virtual address (kept clear of the x86_64 canonical boundary, so
/// a `syscall` can never return to a non-canonical address).
pub const USER_TOP: u64 = 0x7fff_0000_0000;
/// Top of the main thread's stack; a guard page lies below its lowest page.
pub const USER_STACK_TOP: u64 = 0x7ff0_0000_0000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_round_trip_and_never_collide_with_values() {
        for e in [
            SysError::UnknownSyscall,
            SysError::BadPointer,
            SysError::BadArgument,
            SysError::NotGranted,
            SysError::PeerRestarted,
            SysError::PeerStopped,
        ] {
            assert_eq!(SysError::decode(e.encode()), Err(e));
        }
        assert_eq!(SysError::decode(ERROR_BASE - 1), Ok(ERROR_BASE - 1));
        assert!(SysError::BadPointer.is_callers_fault());
        assert!(!SysError::PeerRestarted.is_callers_fault());
    }

    #[test]
    fn syscall_numbers_round_trip() {
        for n in 0..SYSCALL_COUNT {
            assert_eq!(Sysno::from_usize(n).map(|s| s as usize), Some(n));
        }
        assert_eq!(Sysno::from_usize(SYSCALL_COUNT), None);
        let dma = DmaInfo {
            address: DMA_BASE,
            phys: 0x20_0000,
            size: 4096,
        };
        assert_eq!(DmaInfo::from_bytes(&dma.to_bytes()), dma);
        let info = RegionInfo {
            address: SHARED_BASE,
            size: 8192,
            writable: true,
            phys: 0x30_0000,
        };
        assert_eq!(RegionInfo::from_bytes(&info.to_bytes()), info);
        let r = RecvResult {
            channel: 7,
            len: 4096,
        };
        assert_eq!(RecvResult::decode(r.encode()), r);
        assert!(
            r.encode() < ERROR_BASE,
            "a recv result never looks like an error"
        );
    }

    #[test]
    fn device_info_round_trips() {
        let mut info = DeviceInfo {
            is_pci: true,
            pci_address: 0x0020,
            vendor_id: 0x1af4,
            device_id: 0x1001,
            msix_vectors: 2,
            irq_bits: 0b1100,
            ..DeviceInfo::default()
        };
        info.windows[0] = DeviceWindow {
            kind: WindowKind::IoBar,
            index: 0,
            port: 0xc000,
            address: 0,
            size: 64,
        };
        info.windows[1] = DeviceWindow {
            kind: WindowKind::MemoryBar,
            index: 4,
            port: 0,
            address: DEVICE_BASE,
            size: 0x4000,
        };
        let back = DeviceInfo::from_bytes(&info.to_bytes());
        assert_eq!(back, info);
        assert_eq!(back.memory_bar(4).map(|w| w.address), Some(DEVICE_BASE));
        assert_eq!(back.io_bar(0).map(|w| w.port), Some(0xc000));
        assert!(back.memory_bar(0).is_none());
    }

    #[test]
    fn partition_info_layout() {
        let info = PartitionInfo {
            id: 3,
            generation: 7,
            memory_bytes: 1 << 20,
        };
        let bytes = info.to_bytes();
        assert_eq!(&bytes[..4], &[3, 0, 0, 0]);
        assert_eq!(PartitionInfo::from_bytes(&bytes), info);
    }
}
