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

use core::sync::atomic::{AtomicU64, Ordering};

use aarch64_cpu::registers::{TTBR0_EL1, Writeable};

use super::phys_to_virt;
use super::pt::{self, AP_EL0, AP_RO, ATTR_NORMAL, NG, PXN, PtError, SH_INNER, UXN};
use crate::exec::Perm;

/// 8-bit ASIDs (TCR_EL1.AS = 0); 0 is the kernel's (the empty TTBR0 table).
const MAX_ASID: u64 = 255;
static NEXT_ASID: AtomicU64 = AtomicU64::new(1);

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
}

impl AddressSpace {
    /// A new, empty address space with an ASID of its own; `None` when out of frames or ASIDs.
    pub fn new() -> Option<Self> {
        let asid = NEXT_ASID.fetch_add(1, Ordering::Relaxed);
        if asid > MAX_ASID {
            return None;
        }
        let root = crate::arch::alloc_zeroed_frame(phys_to_virt)?;
        Some(Self { root, asid })
    }

    /// Maps the user page at `va` to frame `phys` with `perm` (never writable and executable).
    pub fn map(&mut self, va: u64, phys: u64, perm: Perm) -> Result<(), MapError> {
        if va >= abi::USER_TOP || !va.is_multiple_of(pt::PAGE) || (perm.write && perm.exec) {
            return Err(MapError::BadAddress);
        }
        let mut attrs = ATTR_NORMAL | SH_INNER | NG | AP_EL0 | PXN;
        if !perm.write {
            attrs |= AP_RO;
        }
        if !perm.exec {
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

    /// The frame behind user address `va` and its page's permissions, if EL0 may access it.
    pub fn translate(&self, va: u64) -> Option<(u64, Perm)> {
        if va >= abi::USER_TOP {
            return None;
        }
        // SAFETY: `root` is this address space's tree, built by `pt`; it is only read.
        let (entry, level) = unsafe { pt::lookup(self.root, va) }?;
        if level != 3 || entry & AP_EL0 == 0 {
            return None;
        }
        let perm = Perm {
            write: entry & AP_RO == 0,
            exec: entry & UXN == 0,
        };
        Some(((entry & pt::ADDR_MASK) + (va & (pt::PAGE - 1)), perm))
    }

    /// Makes this the active address space: TTBR0_EL1 gets the tree and the ASID in one write.
    pub fn activate(&self) {
        TTBR0_EL1.set(self.root | (self.asid << 48));
        // SAFETY: an ISB makes the new TTBR0 apply to the instructions after it (the eret
        // to the partition is itself context-synchronising; this covers kernel accesses).
        unsafe { core::arch::asm!("isb", options(nostack, preserves_flags)) };
    }
}
