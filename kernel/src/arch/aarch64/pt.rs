//! VMSAv8-64 stage-1 translation tables with the 4 KiB granule and 48-bit addresses: four
//! levels (0-3) of 512 eight-byte descriptors, each table one frame reached through the linear
//! map. Used for the kernel's TTBR1 tables ([`super::paging`]) and partitions' TTBR0 tables
//! ([`super::mm`]).

use super::phys_to_virt;

/// Descriptor bits (Arm ARM DDI 0487, "Translation table descriptor formats").
pub const VALID: u64 = 1 << 0;
/// At levels 0-2: a table descriptor (else a block); at level 3: a page (must be set).
pub const TABLE_OR_PAGE: u64 = 1 << 1;
/// MAIR_EL1 index 0: Device-nGnRnE (the boot stub's MAIR value).
pub const ATTR_DEVICE: u64 = 0 << 2;
/// MAIR_EL1 index 1: Normal, write-back cacheable.
pub const ATTR_NORMAL: u64 = 1 << 2;
/// MAIR_EL1 index 2: Normal, non-cacheable (uncached shared memory, write-combining).
pub const ATTR_NORMAL_NC: u64 = 2 << 2;
/// MAIR_EL1 index 3: Device-nGnRE (partitions' device registers: posted writes allowed, no
/// gathering or reordering).
pub const ATTR_DEVICE_NGNRE: u64 = 3 << 2;
/// AP[1]: EL0 may access the page.
pub const AP_EL0: u64 = 1 << 6;
/// AP[2]: read-only (at every level that may access it).
pub const AP_RO: u64 = 1 << 7;
pub const SH_INNER: u64 = 3 << 8;
/// Access flag: set on every entry, so no access-flag fault is ever taken.
pub const AF: u64 = 1 << 10;
/// Not global: the entry is tagged with the ASID of the address space that holds it.
pub const NG: u64 = 1 << 11;
/// Never executable at EL1.
pub const PXN: u64 = 1 << 53;
/// Never executable at EL0.
pub const UXN: u64 = 1 << 54;
/// Output address bits [47:12].
pub const ADDR_MASK: u64 = 0x0000_ffff_ffff_f000;

pub const PAGE: u64 = 4096;
pub const BLOCK_2M: u64 = 2 << 20;

/// Why a mapping could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PtError {
    /// No frame for an intermediate table.
    OutOfMemory,
    /// The address is already mapped (by a page or a block).
    Occupied,
}

fn index(va: u64, level: u32) -> usize {
    ((va >> (39 - 9 * level)) & 511) as usize
}

/// The table at physical address `phys`.
///
/// # Safety
/// `phys` must be a translation table (a frame the caller owns) inside the linear map, and no
/// other reference to it may be live.
unsafe fn table<'a>(phys: u64) -> &'a mut [u64; 512] {
    // SAFETY: forwarded to the caller.
    unsafe { &mut *(phys_to_virt(phys) as *mut [u64; 512]) }
}

/// Writes the descriptor for `va` at `level` (2: a 2 MiB block, 3: a 4 KiB page) in the tables
/// rooted at `root`, creating intermediate tables from zeroed frames. Only the bits of `va`
/// below 48 are used, so upper-half addresses index TTBR1 tables the same way.
///
/// The caller makes the write visible to the table walker (`dsb ishst`) before relying on it.
///
/// # Safety
/// `root` must be a level-0 table owned by the caller, inside the linear map, whose tables
/// were all built by this module; if it is live in TTBR0/TTBR1, `va` must be unmapped (an
/// invalid entry is never cached in a TLB, so no maintenance is needed for it).
pub unsafe fn map(root: u64, va: u64, pa: u64, level: u32, attrs: u64) -> Result<(), PtError> {
    let mut phys = root;
    for l in 0..level {
        // SAFETY: `phys` is the root or a table this loop found or created below, each a frame
        // this module allocated for these tables; only this one reference is live.
        let t = unsafe { table(phys) };
        let entry = &mut t[index(va, l)];
        if *entry & VALID == 0 {
            let frame = crate::arch::alloc_zeroed_frame().ok_or(PtError::OutOfMemory)?;
            *entry = frame | TABLE_OR_PAGE | VALID;
        } else if *entry & TABLE_OR_PAGE == 0 {
            return Err(PtError::Occupied);
        }
        phys = *entry & ADDR_MASK;
    }
    // SAFETY: as above, the last table of the walk.
    let t = unsafe { table(phys) };
    let entry = &mut t[index(va, level)];
    if *entry & VALID != 0 {
        return Err(PtError::Occupied);
    }
    let kind = if level == 3 { TABLE_OR_PAGE } else { 0 };
    *entry = (pa & ADDR_MASK) | attrs | AF | kind | VALID;
    Ok(())
}

/// The descriptor that maps `va` (a page or block) and its level, if any.
///
/// # Safety
/// As for [`map`]; the tables are only read.
pub unsafe fn lookup(root: u64, va: u64) -> Option<(u64, u32)> {
    let mut phys = root;
    for level in 0..4 {
        // SAFETY: a table of this tree (the caller's promise), only read.
        let entry = unsafe { table(phys) }[index(va, level)];
        if entry & VALID == 0 {
            return None;
        }
        if level == 3 || entry & TABLE_OR_PAGE == 0 {
            return Some((entry, level));
        }
        phys = entry & ADDR_MASK;
    }
    None
}

/// Maps physical `[start, end)` at `start + offset` with `attrs`: 2 MiB blocks where a whole
/// aligned block fits, 4 KiB pages at the ragged edges.
///
/// # Safety
/// As for [`map`], and the tables must not be live (the kernel's tables before the switch).
pub unsafe fn map_range(
    root: u64,
    offset: u64,
    start: u64,
    end: u64,
    attrs: u64,
) -> Result<(), PtError> {
    let mut pa = start & !(PAGE - 1);
    let end = end.next_multiple_of(PAGE);
    while pa < end {
        let (level, size) = if pa.is_multiple_of(BLOCK_2M) && pa + BLOCK_2M <= end {
            (2, BLOCK_2M)
        } else {
            (3, PAGE)
        };
        // SAFETY: forwarded to the caller.
        unsafe { map(root, pa.wrapping_add(offset), pa, level, attrs)? };
        pa += size;
    }
    Ok(())
}
