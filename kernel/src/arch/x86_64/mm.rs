//! Partition address spaces: a level-4 table per partition whose upper half is the kernel's
//! (shared, supervisor-only) and whose lower half holds the partition's pages.

use x86_64::structures::paging::{
    Mapper, Page, PageTable, PageTableFlags as Flags, PhysFrame, Size4KiB,
};
use x86_64::{PhysAddr, VirtAddr};

use core::cell::Cell;
use core::sync::atomic::{AtomicU64, Ordering};

use kcore::image::Cache;
use kcore::mem::PAGE_SIZE;
use spin::Mutex;

use super::paging::{kernel_root, mapper_for, phys_to_virt, table_frames};
use crate::arch::{DeviceMemory, UserFrames};
use crate::exec::Perm;

/// Most I/O port ranges one partition may be granted.
pub const MAX_IO_RANGES: usize = 8;

/// The I/O port ranges open in the TSS bitmap now, and the address space they belong to.
static OPEN_PORTS_OWNER: AtomicU64 = AtomicU64::new(0);
/// The ranges open in the bitmap and the address space they belong to (0: none).
struct OpenPorts {
    owner: u64,
    ranges: [(u16, u16); MAX_IO_RANGES],
    count: usize,
}

/// What is open now, behind OPEN_PORTS_OWNER.
static OPEN_PORTS: Mutex<OpenPorts> = Mutex::new(OpenPorts {
    owner: 0,
    ranges: [(0, 0); MAX_IO_RANGES],
    count: 0,
});

/// An available-to-software entry bit: the page holds device registers, which the kernel
/// never touches for a partition.
const SW_DEVICE: Flags = Flags::BIT_9;

/// The PAT-selecting bits for cache attribute `cache`.
fn cache_flags(cache: Cache) -> Flags {
    match cache {
        Cache::WriteBack => Flags::empty(),
        Cache::WriteCombining => Flags::NO_CACHE,
        Cache::Uncached | Cache::Device => Flags::NO_CACHE | Flags::WRITE_THROUGH,
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
    /// Out of frames for page tables.
    OutOfMemory,
    /// The page is outside the user half or already mapped.
    BadAddress,
}

/// One partition's address space.
#[derive(Debug)]
pub struct AddressSpace {
    root: u64,
    /// I/O port ranges (first, count) the partition may use with `in`/`out`.
    io_ports: [(u16, u16); MAX_IO_RANGES],
    io_count: usize,
    /// The last page [`Self::translate`] found: (user page, frame, permissions), the page
    /// `NO_PAGE` when none. Mappings are only ever added (a partition's pages stay mapped to
    /// the same frames for its whole life, restarts included), so a page found stays valid;
    /// IPC checks the same buffer page on every call, and this saves the walk.
    last: Cell<(u64, u64, Perm)>,
}

/// Not a page address: the translation cache is empty.
const NO_PAGE: u64 = u64::MAX;
const NO_PERM: Perm = Perm {
    write: false,
    exec: false,
};

impl AddressSpace {
    /// A new address space with the kernel's upper half and an empty lower half.
    pub fn new() -> Option<Self> {
        let root = crate::arch::alloc_zeroed_frame()?;
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
        Some(Self {
            root,
            io_ports: [(0, 0); MAX_IO_RANGES],
            io_count: 0,
            last: Cell::new((NO_PAGE, 0, NO_PERM)),
        })
    }

    /// Maps the user page at `va` to `frame` (one frame of partition memory) with `perm`
    /// (never writable and executable).
    pub fn map(&mut self, va: u64, frame: UserFrames, perm: Perm) -> Result<(), MapError> {
        let phys = one_frame(frame)?;
        // SAFETY: `phys` is a frame of a `UserFrames`, and the entry is not a device one.
        unsafe { self.map_with(va, phys, perm, Flags::empty()) }
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
        unsafe { self.map_with(va, phys, perm, cache_flags(cache)) }
    }

    /// Maps the user page at `va` to the device registers `offset` bytes into `device` (a
    /// page-aligned offset), never executable. With the
    /// power-on PAT (which the kernel keeps) PCD|PWT selects UC for uncached and device
    /// memory; write-combining is not set up in the PAT and maps as UC- (PCD): uncached, only
    /// not combining. The page is marked as device memory, so the kernel never reads or writes
    /// it on the partition's behalf ([`Self::translate`] does not report it).
    pub fn map_device(
        &mut self,
        va: u64,
        device: &DeviceMemory,
        offset: u64,
        write: bool,
        cache: Cache,
    ) -> Result<(), MapError> {
        let phys = device
            .at(offset, PAGE_SIZE)
            .filter(|_| offset.is_multiple_of(PAGE_SIZE))
            .ok_or(MapError::BadAddress)?;
        let perm = Perm { write, exec: false };
        // SAFETY: the page lies in `device`, which is no RAM the kernel knows of
        // (`DeviceMemory::new`'s check), and the entry is marked as a device one.
        unsafe { self.map_with(va, phys, perm, cache_flags(cache) | SW_DEVICE) }
    }

    /// Lets the partition use ports `base .. base + count`; false when the kernel keeps any of
    /// them or the partition has its maximum of ranges.
    pub fn grant_io_ports(&mut self, base: u16, count: u16) -> bool {
        if self.io_count == MAX_IO_RANGES || !super::gdt::ports_grantable(base, count) {
            return false;
        }
        self.io_ports[self.io_count] = (base, count);
        self.io_count += 1;
        true
    }

    /// Maps the user page at `va` to the frame at `phys` with `perm` and the `extra` bits.
    ///
    /// # Safety
    /// Without [`SW_DEVICE`] in `extra`, `phys` must be a frame of a [`UserFrames`] (what
    /// [`Self::translate`] reports as one); with it, `phys` must be device memory, not RAM. A
    /// partition can then reach nothing through the page that the kernel relies on.
    unsafe fn map_with(
        &mut self,
        va: u64,
        phys: u64,
        perm: Perm,
        extra: Flags,
    ) -> Result<(), MapError> {
        if va >= abi::USER_TOP || !va.is_multiple_of(4096) || (perm.write && perm.exec) {
            return Err(MapError::BadAddress);
        }
        let mut flags = Flags::PRESENT | Flags::USER_ACCESSIBLE | extra;
        if perm.write {
            flags |= Flags::WRITABLE;
        }
        if !perm.exec {
            flags |= Flags::NO_EXECUTE;
        }
        let parents = Flags::PRESENT | Flags::WRITABLE | Flags::USER_ACCESSIBLE;
        // Nothing found before can change (a mapped page is refused below), but a new mapping
        // is no time to rely on that.
        self.last.set((NO_PAGE, 0, NO_PERM));
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

    /// The frame of partition memory behind user address `va` (one page), the offset of `va` in
    /// it and the page's permissions, if the partition may access it and it is memory.
    ///
    /// A plain four-level walk through the direct map (system calls check their user slices
    /// with it on every IPC, where the generic mapper of the `x86_64` crate costs three times
    /// as much): only 4 KiB pages count, as partitions have no others, and the permissions are
    /// the last level's, under parents that the mapper always makes present, writable and
    /// user-accessible.
    pub fn translate(&self, va: u64) -> Option<(UserFrames, usize, Perm)> {
        let (phys, perm) = self.translate_phys(va)?;
        // SAFETY: `translate_phys` reports only user leaf entries not marked SW_DEVICE, and
        // only `map` and `map_shared` write those, each from a frame of a `UserFrames`
        // (`map_with`'s contract).
        let frame = unsafe { UserFrames::from_user_page(phys) };
        Some((frame, (phys & 0xfff) as usize, perm))
    }

    /// The physical address behind user address `va` and its page's permissions, as
    /// [`Self::translate`] reports them.
    fn translate_phys(&self, va: u64) -> Option<(u64, Perm)> {
        const ADDR: u64 = 0x000f_ffff_ffff_f000;
        let (page, frame, perm) = self.last.get();
        if va & !0xfff == page {
            // (Only user pages are cached, so `va` is below USER_TOP.)
            return Some((frame + (va & 0xfff), perm));
        }
        if va >= abi::USER_TOP {
            return None;
        }
        let mut table = self.root;
        let mut entry = 0;
        for shift in [39u32, 30, 21, 12] {
            let index = (va >> shift) & 511;
            // SAFETY: `table` is a page table of this address space (the root, or a frame a
            // present entry of it names, which only the mapper writes): RAM, reachable
            // through the direct map, aligned; reading one entry has no side effect.
            entry = unsafe { *((phys_to_virt(table) as *const u64).add(index as usize)) };
            if entry & Flags::PRESENT.bits() == 0
                || (shift != 12 && entry & Flags::HUGE_PAGE.bits() != 0)
            {
                return None;
            }
            table = entry & ADDR;
        }
        // Device registers are never touched by the kernel for a partition (see map_device).
        if entry & Flags::USER_ACCESSIBLE.bits() == 0 || entry & SW_DEVICE.bits() != 0 {
            return None;
        }
        let perm = Perm {
            write: entry & Flags::WRITABLE.bits() != 0,
            exec: entry & Flags::NO_EXECUTE.bits() == 0,
        };
        self.last.set((va & !0xfff, table, perm));
        Some((table + (va & 0xfff), perm))
    }

    /// Makes this the active address space, with its I/O ports open and no others.
    pub fn activate(&self) {
        // Most switches are between partitions without ports and change nothing in the bitmap.
        let open_for = OPEN_PORTS_OWNER.load(Ordering::Relaxed);
        if open_for != self.root && (open_for != 0 || self.io_count > 0) {
            let mut open = OPEN_PORTS.lock();
            if open.owner != self.root {
                super::gdt::set_io_ports(
                    &open.ranges[..open.count],
                    &self.io_ports[..self.io_count],
                );
                // Owner 0 (nobody) while no ports are open, so that the check above stays
                // cheap for partitions without ports.
                let owner = if self.io_count > 0 { self.root } else { 0 };
                *open = OpenPorts {
                    owner,
                    ranges: self.io_ports,
                    count: self.io_count,
                };
                OPEN_PORTS_OWNER.store(owner, Ordering::Relaxed);
            }
        }
        let current: u64;
        // SAFETY: reading CR3 has no side effect. (Read raw: the `x86_64` crate's typed read
        // re-checks the address, which the IPC path pays on every switch.)
        unsafe {
            core::arch::asm!("mov {}, cr3", out(reg) current, options(nomem, nostack, preserves_flags))
        };
        if current & !0xfff != self.root {
            // SAFETY: the table maps the kernel's upper half exactly as every other address
            // space does, so the kernel keeps running unchanged after the switch; the flag
            // bits (PWT, PCD) are kept as they were.
            unsafe {
                core::arch::asm!("mov cr3, {}", in(reg) self.root | (current & 0xfff), options(nostack, preserves_flags))
            };
        }
    }
}
