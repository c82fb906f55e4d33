//! Loading partitions: their ELF segments and stack into their own address space (W^X, a
//! guard page, the memory budget), and the shared and DMA regions the description gives them.

use kcore::elf::{EM_AARCH64, EM_X86_64};
use kcore::image::SystemImage;
use kcore::mem::PAGE_SIZE;

use super::{Dma, MAX_PARTITIONS, MAX_REGIONS, Partition, Perm, Region};
use crate::arch;
use crate::arch::mm::{AddressSpace, MapError};
use abi::{USER_BASE, USER_STACK_TOP};

/// Why a partition could not be loaded.
pub(super) enum LoadError {
    Elf(kcore::elf::ElfError),
    /// A segment outside the user range, or writable and executable at once (W^X).
    BadSegment(usize),
    /// Two segments with different permissions share a page.
    SharedPage(u64),
    OverBudget {
        needed: u64,
        budget: u64,
    },
    OutOfMemory,
}

impl core::fmt::Display for LoadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LoadError::Elf(e) => write!(f, "malformed ELF: {e:?}"),
            LoadError::BadSegment(i) => write!(
                f,
                "segment {i} is outside the user range or writable and executable"
            ),
            LoadError::SharedPage(page) => write!(
                f,
                "segments with different permissions share page {page:#x}"
            ),
            LoadError::OverBudget { needed, budget } => {
                write!(
                    f,
                    "needs more than its memory budget ({needed} of {budget} bytes)"
                )
            }
            LoadError::OutOfMemory => f.write_str("out of physical memory"),
        }
    }
}

pub(super) fn elf_machine() -> u16 {
    if cfg!(target_arch = "aarch64") {
        EM_AARCH64
    } else {
        EM_X86_64
    }
}

/// Maps and fills the partition's segments and stack; on restart, `reload` rewrites the same
/// frames instead of mapping new ones. Returns the bytes of memory used.
pub(super) fn load(p: &mut Partition, reload: bool) -> Result<u64, LoadError> {
    let mut used = 0u64;
    let mut last_page: Option<(u64, Perm)> = None;
    for (index, seg) in p.elf.load_segments().enumerate() {
        let seg = seg.map_err(LoadError::Elf)?;
        let perm = Perm {
            write: seg.flags.writable(),
            exec: seg.flags.executable(),
        };
        let end = seg.vaddr + seg.mem_size;
        if seg.vaddr < USER_BASE
            || end > USER_STACK_TOP - p.stack_bytes - PAGE_SIZE
            || (perm.write && perm.exec)
        {
            return Err(LoadError::BadSegment(index));
        }
        let data = p.elf.segment_data(&seg);
        let first = seg.vaddr & !(PAGE_SIZE - 1);
        for page in (first..end.next_multiple_of(PAGE_SIZE)).step_by(PAGE_SIZE as usize) {
            if let Some((shared, shared_perm)) = last_page
                && shared == page
            {
                if shared_perm != perm {
                    return Err(LoadError::SharedPage(page));
                }
            } else {
                used += PAGE_SIZE;
                if used > p.memory_bytes {
                    return Err(LoadError::OverBudget {
                        needed: used,
                        budget: p.memory_bytes,
                    });
                }
                map_fresh_page(p, page, perm, reload)?;
            }
            last_page = Some((page, perm));
            // Copy the part of the segment's file bytes that falls in this page.
            let lo = page.max(seg.vaddr);
            let hi = (page + PAGE_SIZE).min(seg.vaddr + data.len() as u64);
            if lo < hi {
                let (frame, at, _) = p.space.translate(lo).ok_or(LoadError::OutOfMemory)?;
                let from = (lo - seg.vaddr) as usize;
                frame.write(at, &data[from..from + (hi - lo) as usize]);
            }
        }
    }
    // The stack, with an unmapped guard page below it.
    for page in (USER_STACK_TOP - p.stack_bytes..USER_STACK_TOP).step_by(PAGE_SIZE as usize) {
        used += PAGE_SIZE;
        if used > p.memory_bytes {
            return Err(LoadError::OverBudget {
                needed: used,
                budget: p.memory_bytes,
            });
        }
        map_fresh_page(
            p,
            page,
            Perm {
                write: true,
                exec: false,
            },
            reload,
        )?;
    }
    Ok(used)
}

/// Maps a zeroed frame at `page`, or on reload zeroes the frame already there.
fn map_fresh_page(p: &mut Partition, page: u64, perm: Perm, reload: bool) -> Result<(), LoadError> {
    if reload {
        let (frame, _, _) = p.space.translate(page).ok_or(LoadError::OutOfMemory)?;
        frame.zero();
        return Ok(());
    }
    let frame = arch::alloc_user_frames(1).ok_or(LoadError::OutOfMemory)?;
    p.space.map(page, frame, perm).map_err(|e| match e {
        MapError::OutOfMemory => LoadError::OutOfMemory,
        MapError::BadAddress => LoadError::BadSegment(usize::MAX),
    })
}

/// Allocates each shared region's frames (zeroed, physically contiguous) and maps them into
/// every partition that takes part, at the region's fixed address, never executable, with the
/// region's cache attribute (the same on every side, so no two mappings disagree). A region
/// with a DMA owner is the same: contiguous frames are what lets the owner's devices reach it
/// by one base address; only the owner learns that address (`Region::phys_for`). A region
/// that cannot be made is left out, and the partitions that map it are told so at boot.
pub(super) fn map_regions(
    image: &SystemImage<'static>,
    partitions: &mut [Option<Partition>; MAX_PARTITIONS],
) -> [Option<Region>; MAX_REGIONS] {
    const NONE: Option<Region> = None;
    let mut regions = [NONE; MAX_REGIONS];
    let mut address = abi::SHARED_BASE;
    for (i, slot) in regions.iter_mut().enumerate().take(image.region_count()) {
        let Ok(r) = image.region(i) else { continue };
        let Some(frames) = alloc_zeroed_run(r.size) else {
            error!(
                "shared region {}: no {} KiB of contiguous memory; not mapped",
                r.name,
                r.size / 1024
            );
            continue;
        };
        for &(partition, writable) in &r.mappings[..r.mapping_count] {
            let Some(p) = partitions
                .get_mut(partition as usize)
                .and_then(Option::as_mut)
            else {
                continue;
            };
            let mapped = (0u64..).zip(frames.each_page()).try_for_each(|(k, frame)| {
                p.space
                    .map_shared(address + k * PAGE_SIZE, frame, writable, r.cache)
            });
            if mapped.is_err() {
                error!(
                    "shared region {}: cannot map it into partition {}",
                    r.name, p.name
                );
            }
        }
        let owner = r
            .dma_owner
            .and_then(|o| partitions.get(o as usize)?.as_ref());
        info!(
            "shared region {}: {} KiB at {address:#x} in {} partitions, {:?}{}{}",
            r.name,
            r.size / 1024,
            r.mapping_count,
            r.cache,
            if owner.is_some() { ", DMA owner " } else { "" },
            owner.map_or("", |p| p.name)
        );
        *slot = Some(Region {
            name: r.name,
            address,
            size: r.size,
            mappings: r.mappings,
            mapping_count: r.mapping_count,
            phys: frames.phys(),
            dma_owner: r.dma_owner.map(usize::from),
        });
        // The next region starts after an unmapped guard page.
        address += r.size + PAGE_SIZE;
    }
    regions
}

impl Region {
    /// The region's physical address as `region_info` reports it to `partition`: only its DMA
    /// owner learns it (issue #4: a partition learns the physical address of the DMA memory it
    /// owns, and nothing else); 0 for everyone else.
    pub(super) fn phys_for(&self, partition: usize) -> u64 {
        if self.dma_owner == Some(partition) {
            self.phys
        } else {
            0
        }
    }
}

/// Allocates each DMA region (physically contiguous, zeroed) and maps it read-write, never
/// executable, into its owner only, from `DMA_BASE` with a guard page after each region.
/// Cache attributes: DMA on x86_64 and on QEMU's virt is cache-coherent, so the mapping is
/// write-back like any RAM.
pub(super) fn map_dma(
    image: &SystemImage<'static>,
    partitions: &mut [Option<Partition>; MAX_PARTITIONS],
) -> [Option<Dma>; MAX_REGIONS] {
    const NONE: Option<Dma> = None;
    let mut regions = [NONE; MAX_REGIONS];
    let mut address = abi::DMA_BASE;
    for (i, slot) in regions.iter_mut().enumerate().take(image.dma_count()) {
        let Ok(d) = image.dma(i) else { continue };
        let Some(p) = partitions
            .get_mut(d.owner as usize)
            .and_then(Option::as_mut)
        else {
            continue;
        };
        let Some(frames) = alloc_zeroed_run(d.size) else {
            error!(
                "DMA region {}: no {} KiB of contiguous memory; not mapped",
                d.name,
                d.size / 1024
            );
            continue;
        };
        let perm = Perm {
            write: true,
            exec: false,
        };
        if map_run(&mut p.space, address, frames, perm).is_err() {
            error!(
                "DMA region {}: cannot map it into partition {}",
                d.name, p.name
            );
            continue;
        }
        info!(
            "DMA region {}: {} KiB for partition {} at {address:#x}",
            d.name,
            d.size / 1024,
            p.name
        );
        *slot = Some(Dma {
            name: d.name,
            owner: d.owner as usize,
            address,
            phys: frames.phys(),
            size: d.size,
        });
        address += d.size + PAGE_SIZE;
    }
    regions
}

/// Allocates `size` bytes (whole pages) of physically contiguous frames, zeroed.
fn alloc_zeroed_run(size: u64) -> Option<arch::UserFrames> {
    arch::alloc_user_frames(size / PAGE_SIZE)
}

/// Maps `frames` at `address` with `perm`; stops at the first page that cannot be mapped.
fn map_run(
    space: &mut AddressSpace,
    address: u64,
    frames: arch::UserFrames,
    perm: Perm,
) -> Result<(), MapError> {
    for (k, frame) in (0u64..).zip(frames.each_page()) {
        space.map(address + k * PAGE_SIZE, frame, perm)?;
    }
    Ok(())
}
