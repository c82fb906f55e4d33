//! Partition address spaces: a level-4 table per partition whose upper half is the kernel's
//! (shared, supervisor-only) and whose lower half holds the partition's pages.

use x86_64::registers::control::Cr3;
use x86_64::structures::paging::mapper::{MappedFrame, TranslateResult};
use x86_64::structures::paging::{
    Mapper, Page, PageTable, PageTableFlags as Flags, PhysFrame, Size4KiB, Translate,
};
use x86_64::{PhysAddr, VirtAddr};

use super::paging::{kernel_root, mapper_for, phys_to_virt, table_frames};
use crate::exec::Perm;

/// Why a page could not be mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// Out of frames for page tables.
    OutOfMemory,
    /// The page is outside the user half or already mapped.
    BadAddress,
}

/// One partition's address space.
#[derive(Debug)]
pub struct AddressSpace {
    root: u64,
}

impl AddressSpace {
    /// A new address space with the kernel's upper half and an empty lower half.
    pub fn new() -> Option<Self> {
        let root = crate::arch::alloc_zeroed_frame(phys_to_virt)?;
        // SAFETY: both tables are reachable through the direct map; `root` was just allocated
        // and the kernel's table is only read. The upper-half entries point at tables shared by
        // every address space, which is what keeps the kernel mapped everywhere.
        unsafe {
            let kernel = &*(phys_to_virt(kernel_root()) as *const PageTable);
            let table = &mut *(phys_to_virt(root) as *mut PageTable);
            for i in 256..512 {
                table[i] = kernel[i].clone();
            }
        }
        Some(Self { root })
    }

    /// Maps the user page at `va` to frame `phys` with `perm` (never writable and executable).
    pub fn map(&mut self, va: u64, phys: u64, perm: Perm) -> Result<(), MapError> {
        if va >= abi::USER_TOP || !va.is_multiple_of(4096) || (perm.write && perm.exec) {
            return Err(MapError::BadAddress);
        }
        let mut flags = Flags::PRESENT | Flags::USER_ACCESSIBLE;
        if perm.write {
            flags |= Flags::WRITABLE;
        }
        if !perm.exec {
            flags |= Flags::NO_EXECUTE;
        }
        let parents = Flags::PRESENT | Flags::WRITABLE | Flags::USER_ACCESSIBLE;
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(va));
        let frame = PhysFrame::<Size4KiB>::containing_address(PhysAddr::new(phys));
        // SAFETY: this address space's table is reachable through the direct map and only
        // this call borrows it; the page is in the lower half, which only the partition uses,
        // and the TLB is flushed below in case this table is active.
        let result = unsafe {
            mapper_for(self.root).map_to_with_table_flags(
                page,
                frame,
                flags,
                parents,
                &mut table_frames(),
            )
        };
        match result {
            Ok(flush) => {
                flush.flush();
                Ok(())
            }
            Err(x86_64::structures::paging::mapper::MapToError::FrameAllocationFailed) => {
                Err(MapError::OutOfMemory)
            }
            Err(_) => Err(MapError::BadAddress),
        }
    }

    /// The frame behind user page `va` and its permissions, if the partition may access it.
    pub fn translate(&self, va: u64) -> Option<(u64, Perm)> {
        if va >= abi::USER_TOP {
            return None;
        }
        // SAFETY: as in `map`; translation only reads the tables.
        let mapper = unsafe { mapper_for(self.root) };
        match mapper.translate(VirtAddr::new(va)) {
            TranslateResult::Mapped {
                frame: MappedFrame::Size4KiB(frame),
                offset,
                flags,
            } if flags.contains(Flags::USER_ACCESSIBLE) => {
                let perm = Perm {
                    write: flags.contains(Flags::WRITABLE),
                    exec: !flags.contains(Flags::NO_EXECUTE),
                };
                Some((frame.start_address().as_u64() + offset, perm))
            }
            _ => None,
        }
    }

    /// Makes this the active address space.
    pub fn activate(&self) {
        let (current, flags) = Cr3::read();
        if current.start_address().as_u64() != self.root {
            // SAFETY: the table maps the kernel's upper half exactly as every other address
            // space does, so the kernel keeps running unchanged after the switch.
            unsafe {
                Cr3::write(
                    PhysFrame::containing_address(PhysAddr::new(self.root)),
                    flags,
                )
            };
        }
    }
}
