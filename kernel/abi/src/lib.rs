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
    /// region the caller maps.
    RegionInfo = 14,
    /// `dma_info(region, ptr, len) -> bytes written`: fills a [`DmaInfo`] for a DMA region the
    /// caller owns: the only way a partition learns a physical address.
    DmaInfo = 15,
}

/// What `lookup` looks up.
#[repr(usize)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    Channel = 0,
    Notification = 1,
    SharedRegion = 2,
    DmaRegion = 3,
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
    pub const SIZE: usize = 24;

    /// Encodes into the wire layout (three little-endian u64s).
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0; Self::SIZE];
        b[0..8].copy_from_slice(&self.address.to_le_bytes());
        b[8..16].copy_from_slice(&self.phys.to_le_bytes());
        b[16..24].copy_from_slice(&self.size.to_le_bytes());
        b
    }

    /// Decodes from the wire layout.
    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let word = |i: usize| {
            let mut w = [0; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(w)
        };
        Self {
            address: word(0),
            phys: word(8),
            size: word(16),
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
}

impl RegionInfo {
    /// Encoded size in bytes.
    pub const SIZE: usize = 24;

    /// Encodes into the wire layout (three little-endian u64s).
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0; Self::SIZE];
        b[0..8].copy_from_slice(&self.address.to_le_bytes());
        b[8..16].copy_from_slice(&self.size.to_le_bytes());
        b[16..24].copy_from_slice(&(self.writable as u64).to_le_bytes());
        b
    }

    /// Decodes from the wire layout.
    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let word = |i: usize| {
            let mut w = [0; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(w)
        };
        Self {
            address: word(0),
            size: word(8),
            writable: word(16) != 0,
        }
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
    pub const SIZE: usize = 16;

    /// Encodes into the wire layout.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0; Self::SIZE];
        b[0..4].copy_from_slice(&self.id.to_le_bytes());
        b[4..8].copy_from_slice(&self.generation.to_le_bytes());
        b[8..16].copy_from_slice(&self.memory_bytes.to_le_bytes());
        b
    }

    /// Decodes from the wire layout.
    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut m = [0; 8];
        m.copy_from_slice(&b[8..16]);
        Self {
            id: u32_at(0),
            generation: u32_at(4),
            memory_bytes: u64::from_le_bytes(m),
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
        for n in 0..16 {
            assert_eq!(Sysno::from_usize(n).map(|s| s as usize), Some(n));
        }
        assert_eq!(Sysno::from_usize(16), None);
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
