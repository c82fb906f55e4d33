//! Partition address spaces on aarch64: a TTBR0 tree per partition (4 KiB granule, 48-bit
//! addresses, four levels) tagged with an ASID of its own. The kernel lives in TTBR1 with
//! global entries, so it needs no copy in each tree (unlike x86_64's shared upper half).
//!
//! User pages are non-global (nG), EL0-accessible (AP[1]), never executable at EL1 (PXN) and,
//! unless executable, never at EL0 either (UXN); a page is never both writable and executable.
//!
//! TLB maintenance. Entries are only ever added to a tree (invalid to valid), never changed or
//! removed while the tree exists: a restart reloads the same frames in place. The Arm ARM
//! (DDI 0487, "Translation Lookaside Buffers (TLBs)") allows a TLB to cache only entries that
//! do not fault with a Translation fault, so adding an entry needs no invalidation, only a
//! `dsb ishst` so the table walker sees the write, and an `isb` before it is relied on (the
//! same section, "Ordering and completion of TLB maintenance instructions"). ASIDs are never
//! reused, so switching TTBR0 (ASID and table in one write) needs no invalidation either: no
//! TLB entry of another partition can match the new ASID. The boot stub's global identity map
//! in TTBR0 is flushed once when the kernel's own tables go live (`paging::init`).

use core::cell::Cell;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use aarch64_cpu::registers::{TTBR0_EL1, Writeable};

use super::phys_to_virt;
use kcore::image::Cache;

use super::pt::{
    self, AP_EL0, AP_RO, ATTR_DEVICE_NGNRE, ATTR_NORMAL, ATTR_NORMAL_NC, NG, PXN, PtError,
    SH_INNER, UXN,
};
use crate::arch::{DeviceMemory, UserFrames};
use crate::exec::Perm;

/// 8-bit ASIDs (TCR_EL1.AS = 0); 0 is the kernel's (the empty TTBR0 table).
const MAX_ASID: u64 = 255;
static NEXT_ASID: AtomicU64 = AtomicU64::new(1);

/// A software-defined descriptor bit (bits 55-58 are ignored by the MMU): the page holds device
/// registers, which the kernel never touches for a partition.
const SW_DEVICE: u64 = 1 << 55;

/// The memory-type and shareability bits for cache attribute `cache`.
fn memory_attrs(cache: Cache) -> u64 {
    match cache {
        Cache::WriteBack => ATTR_NORMAL | SH_INNER,
        Cache::WriteCombining | Cache::Uncached => ATTR_NORMAL_NC,
        Cache::Device => ATTR_DEVICE_NGNRE,
    }
}

/// The address of `frame`, which must be exactly one frame.
fn one_frame(frame: UserFrames) -> Result<u64, MapError> {
    if frame.pages() == 1 {
        Ok(frame.phys())
    } else {
        Err(MapError::BadAddress)
    }
}

/// Why a page could not be mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// Out of frames for translation tables.
    OutOfMemory,
    /// The page is outside the user range, misaligned, writable and executable, or mapped.
    BadAddress,
}

/// One partition's address space.
#[derive(Debug)]
pub struct AddressSpace {
    root: u64,
    asid: u64,
    /// The executable user pages lie in `exec_lo..exec_hi` (empty if none).
    exec_lo: u64,
    exec_hi: u64,
    /// Code may have been written (a page mapped, or an executable page looked up by the
    /// loader to fill it) since the instruction cache was last made coherent with it.
    code_dirty: AtomicBool,
    /// The last data page [`Self::translate`] found: (user page, frame, permissions), the page
    /// `NO_PAGE` when none. Mappings are only ever added (a partition's pages stay mapped to
    /// the same frames for its whole life, restarts included), so a page found stays valid;
    /// IPC checks the same buffer page on every call, and this saves the walk. Executable
    /// pages are not kept: looking one up must mark the code dirty.
    last: Cell<(u64, u64, Perm)>,
}

/// Not a page address: the translation cache is empty.
const NO_PAGE: u64 = u64::MAX;
const NO_PERM: Perm = Perm {
    write: false,
    exec: false,
};

impl AddressSpace {
    /// A new, empty address space with an ASID of its own; `None` when out of frames or ASIDs.
    pub fn new() -> Option<Self> {
        let asid = NEXT_ASID.fetch_add(1, Ordering::Relaxed);
        if asid > MAX_ASID {
            return None;
        }
        let root = crate::arch::alloc_zeroed_frame()?;
        Some(Self {
            root,
            asid,
            exec_lo: u64::MAX,
            exec_hi: 0,
            code_dirty: AtomicBool::new(false),
            last: Cell::new((NO_PAGE, 0, NO_PERM)),
        })
    }

    /// Maps the user page at `va` to `frame` (one frame of partition memory) with `perm`
    /// (never writable and executable).
    pub fn map(&mut self, va: u64, frame: UserFrames, perm: Perm) -> Result<(), MapError> {
        let phys = one_frame(frame)?;
        // SAFETY: `phys` is a frame of a `UserFrames`, and the entry is not a device one.
        unsafe { self.map_attrs(va, phys, perm, ATTR_NORMAL | SH_INNER) }
    }

    /// Maps the user page at `va` to `frame` (one frame of partition memory) shared with other
    /// partitions, never
    /// executable, with cache attribute `cache` (see [`Self::map_device`]).
    pub fn map_shared(
        &mut self,
        va: u64,
        frame: UserFrames,
        write: bool,
        cache: Cache,
    ) -> Result<(), MapError> {
        let phys = one_frame(frame)?;
        let perm = Perm { write, exec: false };
        // SAFETY: `phys` is a frame of a `UserFrames`, and the entry is not a device one.
        unsafe { self.map_attrs(va, phys, perm, memory_attrs(cache)) }
    }

    /// Maps the user page at `va` to the device registers `offset` bytes into `device` (a
    /// page-aligned offset), never executable: Device-
    /// nGnRE for device memory, Normal non-cacheable for uncached and write-combining, normal
    /// memory for write-back. The page is marked as device memory, so the kernel never reads
    /// or writes it on the partition's behalf ([`Self::translate`] does not report it).
    pub fn map_device(
        &mut self,
        va: u64,
        device: &DeviceMemory,
        offset: u64,
        write: bool,
        cache: Cache,
    ) -> Result<(), MapError> {
        let phys = device
            .at(offset, pt::PAGE)
            .filter(|_| offset.is_multiple_of(pt::PAGE))
            .ok_or(MapError::BadAddress)?;
        let perm = Perm { write, exec: false };
        // SAFETY: the page lies in `device`, which is no RAM the kernel knows of
        // (`DeviceMemory::new`'s check), and the entry is marked as a device one.
        unsafe { self.map_attrs(va, phys, perm, memory_attrs(cache) | SW_DEVICE) }
    }

    /// There are no I/O ports on aarch64: never granted.
    pub fn grant_io_ports(&mut self, _base: u16, _count: u16) -> bool {
        false
    }

    /// Maps the user page at `va` to the frame at `phys` with `perm` and the `memory` bits.
    ///
    /// # Safety
    /// Without [`SW_DEVICE`] in `memory`, `phys` must be a frame of a [`UserFrames`] (what
    /// [`Self::translate`] reports as one); with it, `phys` must be device memory, not RAM. A
    /// partition can then reach nothing through the page that the kernel relies on.
    unsafe fn map_attrs(
        &mut self,
        va: u64,
        phys: u64,
        perm: Perm,
        memory: u64,
    ) -> Result<(), MapError> {
        if va >= abi::USER_TOP || !va.is_multiple_of(pt::PAGE) || (perm.write && perm.exec) {
            return Err(MapError::BadAddress);
        }
        // Nothing found before can change (`pt::map` refuses a mapped page), but a new mapping
        // is no time to rely on that.
        self.last.set((NO_PAGE, 0, NO_PERM));
        let mut attrs = memory | NG | AP_EL0 | PXN;
        if !perm.write {
            attrs |= AP_RO;
        }
        if perm.exec {
            self.exec_lo = self.exec_lo.min(va);
            self.exec_hi = self.exec_hi.max(va + pt::PAGE);
            self.code_dirty.store(true, Ordering::Relaxed);
        } else {
            attrs |= UXN;
        }
        // SAFETY: `root` is this address space's own tree, built only by `pt`; `va` is checked
        // to be unmapped by `pt::map` (it refuses occupied entries), so no TLB entry for it can
        // exist and none needs invalidating.
        let result = unsafe { pt::map(self.root, va, phys, 3, attrs) };
        // SAFETY: barriers only order this CPU's memory accesses and the table walker's.
        unsafe { core::arch::asm!("dsb ishst", "isb", options(nostack, preserves_flags)) };
        result.map_err(|e| match e {
            PtError::OutOfMemory => MapError::OutOfMemory,
            PtError::Occupied => MapError::BadAddress,
        })
    }

    /// The frame of partition memory behind user address `va` (one page), the offset of `va` in
    /// it and the page's permissions, if EL0 may access it and it is memory (not device
    /// registers).
    pub fn translate(&self, va: u64) -> Option<(UserFrames, usize, Perm)> {
        let (phys, perm) = self.translate_phys(va)?;
        // SAFETY: `translate_phys` reports only user leaf entries not marked SW_DEVICE, and
        // only `map` and `map_shared` write those, each from a frame of a `UserFrames`
        // (`map_attrs`'s contract).
        let frame = unsafe { UserFrames::from_user_page(phys) };
        Some((frame, (phys & (pt::PAGE - 1)) as usize, perm))
    }

    /// The physical address behind user address `va` and its page's permissions, as
    /// [`Self::translate`] reports them.
    fn translate_phys(&self, va: u64) -> Option<(u64, Perm)> {
        let offset_mask = pt::PAGE - 1;
        let (page, frame, perm) = self.last.get();
        if va & !offset_mask == page {
            // (Only user pages are cached, so `va` is below USER_TOP.)
            return Some((frame + (va & offset_mask), perm));
        }
        if va >= abi::USER_TOP {
            return None;
        }
        // SAFETY: `root` is this address space's tree, built by `pt`; it is only read.
        let (entry, level) = unsafe { pt::lookup(self.root, va) }?;
        if level != 3 || entry & AP_EL0 == 0 || entry & SW_DEVICE != 0 {
            return None;
        }
        let perm = Perm {
            write: entry & AP_RO == 0,
            exec: entry & UXN == 0,
        };
        let frame = entry & pt::ADDR_MASK;
        if perm.exec {
            // The loader looks up each page before writing it (also when it reloads a
            // partition in place); a lookup by a system call only costs a spare cache sync.
            self.code_dirty.store(true, Ordering::Relaxed);
        } else {
            self.last.set((va & !offset_mask, frame, perm));
        }
        Some((frame + (va & offset_mask), perm))
    }

    /// Makes this the active address space: TTBR0_EL1 gets the tree and the ASID in one write.
    /// If code was written since, the instruction cache is first made coherent with it.
    #[inline(always)]
    pub fn activate(&self) {
        // A load, and a store only when set, rather than a swap (an exclusive-access loop):
        // one CPU, in a kernel entry with interrupts masked, so nothing comes between them.
        if self.code_dirty.load(Ordering::Relaxed) {
            self.code_dirty.store(false, Ordering::Relaxed);
            self.sync_code();
        }
        TTBR0_EL1.set(self.root | (self.asid << 48));
        // SAFETY: an ISB makes the new TTBR0 apply to the instructions after it (the eret
        // to the partition is itself context-synchronising; this covers kernel accesses).
        unsafe { core::arch::asm!("isb", options(nostack, preserves_flags)) };
    }

    /// Cleans the data cache to the point of unification for every executable page (through
    /// the linear map: the caches are physically indexed) and invalidates the instruction
    /// cache, so the partition fetches the code the kernel wrote as data: the sequence of
    /// Arm ARM DDI 0487, "Synchronization and coherency issues between data and instruction
    /// accesses" (DC CVAU per line, DSB ISH, IC IALLU, DSB ISH, ISB).
    fn sync_code(&self) {
        let ctr: u64;
        // SAFETY: reading CTR_EL0 has no side effect.
        unsafe { core::arch::asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack)) };
        let line = 4u64 << ((ctr >> 16) & 0xf); // DminLine: log2 of words
        let mut va = self.exec_lo;
        while va < self.exec_hi {
            if let Some(phys) = self.frame_of(va) {
                let start = phys_to_virt(phys) as u64;
                for at in (start..start + pt::PAGE).step_by(line as usize) {
                    // SAFETY: `at` is inside a frame of this partition, mapped in the linear
                    // map; cleaning a line writes it back and changes no data.
                    unsafe { core::arch::asm!("dc cvau, {}", in(reg) at, options(nostack)) };
                }
            }
            va += pt::PAGE;
        }
        // SAFETY: barriers and instruction-cache invalidation change no data.
        unsafe { core::arch::asm!("dsb ish", "ic iallu", "dsb ish", "isb", options(nostack)) };
    }

    /// The frame behind page `va`, without marking code dirty.
    fn frame_of(&self, va: u64) -> Option<u64> {
        // SAFETY: `root` is this address space's tree, built by `pt`; it is only read.
        let (entry, level) = unsafe { pt::lookup(self.root, va) }?;
        (level == 3).then_some(entry & pt::ADDR_MASK)
    }
}
