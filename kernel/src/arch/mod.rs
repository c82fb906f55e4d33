//! Everything that touches hardware, one module per architecture.
//!
//! Each architecture module provides the same items, which the portable kernel uses:
//! - `console::{init, with_locked, emergency_writer}`: the serial console.
//! - `cpu::{enable_interrupts, disable_interrupts, wait_for_interrupt}`.
//! - `time::{init, uptime_ns, ticks, set_deadline}`: the calibrated counter, the periodic tick,
//!   and the one-shot deadline that replaces it once partitions run.
//! - `mm::AddressSpace` and `TrapFrame`: partition address spaces and saved contexts.
//! - `selftest::{read_unmapped, invalid_opcode}`: deliberate faults for the test suite.
//! - `power_off(ExitStatus)`: stop the machine, telling QEMU how it went.
//!
//! This is the only place in the kernel allowed to use `unsafe`; every block argues its case
//! in a `// SAFETY:` comment.

pub mod context;
#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use self::x86_64::*;

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "aarch64")]
pub use self::aarch64::*;

use kcore::mem::frames::{FrameAllocator, bitmap_placement, bitmap_words};
use kcore::mem::{PAGE_SIZE, PhysRegion, RegionKind};
use linked_list_allocator::LockedHeap;
use spin::Mutex;

/// How the machine stops; the test harness reads it back as QEMU's exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Success,
    Failure,
}

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Bytes of the boot-time heap.
pub const HEAP_SIZE: usize = 1 << 20;

static FRAMES: Mutex<Option<FrameAllocator<'static>>> = Mutex::new(None);

/// Builds the frame allocator from the memory map. Its bitmap lives in the first usable range
/// large enough, reached through `phys_to_virt`, and is reserved in itself.
///
/// # Safety
/// `phys_to_virt` must map every usable frame of `regions` to writable kernel memory that
/// nothing else uses.
unsafe fn init_frames(regions: &[PhysRegion], phys_to_virt: impl Fn(u64) -> usize) {
    let Some((at, bytes)) = bitmap_placement(regions) else {
        panic!("no usable memory range can hold the frame bitmap");
    };
    let words = bitmap_words(regions);
    // SAFETY: `at..at + bytes` lies in a usable range (bitmap_placement), so by the caller's
    // promise it is mapped, writable and unused; the allocator reserves it below, so no frame
    // of it is ever handed out, which makes this the only reference to that memory.
    let bitmap = unsafe { core::slice::from_raw_parts_mut(phys_to_virt(at) as *mut u64, words) };
    let mut frames = FrameAllocator::new(regions, bitmap).expect("bitmap sized by bitmap_words");
    frames.reserve(at, at + bytes);
    *FRAMES.lock() = Some(frames);
    let mut ram = RAM.lock();
    for r in regions.iter().filter(|r| r.kind != RegionKind::Reserved) {
        let count = ram.1;
        if count == MAX_RAM_RANGES {
            // More RAM ranges than kept: refuse every device grant rather than miss one.
            ram.0[count - 1] = (0, u64::MAX);
            break;
        }
        ram.0[count] = (r.start, r.end);
        ram.1 += 1;
    }
}

/// Allocates one physical frame for the arch layer's own use (page tables), zeroed. Frames
/// for partition memory come from [`alloc_user_frames`] instead, so that a table frame is
/// never named by a [`UserFrames`].
fn alloc_zeroed_frame() -> Option<u64> {
    let frame = FRAMES.lock().as_mut()?.alloc()?;
    // SAFETY: the frame was just taken from the allocator, so it is usable RAM that nothing
    // else refers to, and the direct/linear map covers usable RAM (init_frames's contract).
    unsafe { zero_phys_page(frame) };
    Some(frame)
}

/// Allocates `count` physically contiguous frames; returns the first one's address. For the
/// arch layer's own use (the x86_64 copy of the boot image).
#[cfg(target_arch = "x86_64")]
fn alloc_contiguous_frames(count: u64) -> Option<u64> {
    FRAMES.lock().as_mut()?.alloc_contiguous(count)
}

/// A run of physically contiguous frames of RAM that the frame allocator handed out for
/// partition memory (segments, stacks, shared and DMA regions).
///
/// Only [`alloc_user_frames`] and the address spaces' `translate` (which reports frames that
/// were mapped from a `UserFrames`) make one, so holding one proves: the frames are usable RAM
/// covered by the kernel's direct/linear map, the allocator never hands them out again (the
/// kernel frees nothing), and no kernel object (page table, heap, stack, image) lives in them,
/// so no Rust reference points into them. That is what [`Self::read`], [`Self::write`] and
/// [`Self::zero`] need to be safe. It does not prove exclusive use: the same frames may be
/// mapped into several partitions (shared regions), and what a partition or a device writes
/// there is just bytes to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserFrames {
    phys: u64,
    pages: u64,
}

/// Allocates `pages` physically contiguous frames for partition memory, zeroed.
pub fn alloc_user_frames(pages: u64) -> Option<UserFrames> {
    let phys = FRAMES.lock().as_mut()?.alloc_contiguous(pages)?;
    let frames = UserFrames { phys, pages };
    frames.zero();
    Some(frames)
}

impl UserFrames {
    /// The frames behind a user page an address space reports.
    ///
    /// # Safety
    /// The page at `phys` must belong to a `UserFrames` (it was mapped from one).
    pub(in crate::arch) unsafe fn from_user_page(phys: u64) -> Self {
        Self {
            phys: phys & !(PAGE_SIZE - 1),
            pages: 1,
        }
    }

    /// The physical address of the first frame.
    pub fn phys(&self) -> u64 {
        self.phys
    }

    /// The number of frames.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// The number of bytes.
    pub fn bytes(&self) -> u64 {
        self.pages * PAGE_SIZE
    }

    /// Each frame alone, in order.
    pub fn each_page(self) -> impl Iterator<Item = UserFrames> {
        (0..self.pages).map(move |index| UserFrames {
            phys: self.phys + index * PAGE_SIZE,
            pages: 1,
        })
    }

    /// Checks that `offset .. offset + len` lies inside the frames; panics if not (the
    /// kernel's own arithmetic is wrong: a partition's input never reaches here unchecked).
    fn at(&self, offset: usize, len: usize) -> u64 {
        let end = (offset as u64).checked_add(len as u64);
        assert!(
            end.is_some_and(|end| end <= self.bytes()),
            "access {offset:#x}+{len:#x} outside frames {:#x}+{:#x}",
            self.phys,
            self.bytes()
        );
        self.phys + offset as u64
    }

    /// Copies the bytes at `offset` into `buf`.
    pub fn read(&self, offset: usize, buf: &mut [u8]) {
        let phys = self.at(offset, buf.len());
        // SAFETY: `at` checked that the range lies inside these frames, which are mapped RAM
        // holding no kernel object (the type's invariant); `buf` is kernel memory, so distinct.
        unsafe { read_phys(phys, buf) }
    }

    /// Copies `data` to `offset`.
    pub fn write(&self, offset: usize, data: &[u8]) {
        let phys = self.at(offset, data.len());
        // SAFETY: as in `read`.
        unsafe { write_phys(phys, data) }
    }

    /// Zeroes every frame.
    pub fn zero(&self) {
        for page in 0..self.pages {
            // SAFETY: each page lies inside these frames (page < pages), mapped RAM holding no
            // kernel object (the type's invariant).
            unsafe { zero_phys_page(self.phys + page * PAGE_SIZE) }
        }
    }
}

/// Copies from physical memory at `phys` into `buf`.
///
/// # Safety
/// `phys .. phys + buf.len()` must be RAM covered by the direct/linear map that no Rust
/// reference points into (nor is written meanwhile by this CPU), and must not overlap `buf`.
unsafe fn read_phys(phys: u64, buf: &mut [u8]) {
    // SAFETY: the source is mapped, readable and not aliased by a reference (the caller's
    // promise); `buf` is a distinct, valid destination of `buf.len()` bytes.
    unsafe {
        core::ptr::copy_nonoverlapping(phys_to_virt(phys) as *const u8, buf.as_mut_ptr(), buf.len())
    }
}

/// Copies `data` into physical memory at `phys`.
///
/// # Safety
/// `phys .. phys + data.len()` must be RAM covered by the direct/linear map that no Rust
/// reference points into and that holds no kernel object, and must not overlap `data`.
unsafe fn write_phys(phys: u64, data: &[u8]) {
    // SAFETY: the destination is mapped, writable and not aliased by a reference or kernel
    // object (the caller's promise); `data` is a distinct, valid source.
    unsafe {
        core::ptr::copy_nonoverlapping(data.as_ptr(), phys_to_virt(phys) as *mut u8, data.len())
    }
}

/// Zeroes the 4 KiB frame that contains `phys`.
///
/// # Safety
/// As for [`write_phys`], for that whole frame.
unsafe fn zero_phys_page(phys: u64) {
    // SAFETY: the frame is mapped RAM holding no kernel object (the caller's promise).
    unsafe {
        core::ptr::write_bytes(
            phys_to_virt(phys & !(PAGE_SIZE - 1)) as *mut u8,
            0,
            PAGE_SIZE as usize,
        )
    }
}

/// Most RAM ranges of the memory map kept for [`DeviceMemory::new`]'s check.
const MAX_RAM_RANGES: usize = 64;

/// The RAM the memory map reports (usable and loaded: the kernel image, the boot image), so
/// that a device grant can never name it. Set once by `init_frames`.
static RAM: Mutex<([(u64, u64); MAX_RAM_RANGES], usize)> =
    Mutex::new(([(0, 0); MAX_RAM_RANGES], 0));

/// Whether physical `[start, end)` may be device memory: not the first MiB (firmware, the
/// real-mode area on a PC), no RAM the frame allocator manages and no RAM the memory map
/// reports in use (the kernel image, the boot image). A BAR or MMIO range that fails this is
/// never mapped into a partition nor written by the kernel.
fn may_be_device_memory(start: u64, end: u64) -> bool {
    let ram = RAM.lock();
    start >= 1 << 20
        && start < end
        && !ram.0[..ram.1].iter().any(|&(s, e)| start < e && s < end)
        && !FRAMES
            .lock()
            .as_ref()
            .is_some_and(|f| f.overlaps_managed(start, end))
}

/// A page-aligned physical range that may be device memory (see [`Self::new`]): the proof the
/// address-space code wants before it maps device registers into a partition, and the MSI-X
/// code before it writes a table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceMemory {
    start: u64,
    end: u64,
}

impl DeviceMemory {
    /// `[start, start + size)` rounded out to whole pages, if none of it is RAM the kernel knows
    /// of, nor the first MiB.
    pub fn new(start: u64, size: u64) -> Option<Self> {
        let first = start & !(PAGE_SIZE - 1);
        let end = start
            .checked_add(size)?
            .checked_next_multiple_of(PAGE_SIZE)?;
        may_be_device_memory(first, end).then_some(Self { start: first, end })
    }

    /// The number of bytes (whole pages).
    pub fn size(&self) -> u64 {
        self.end - self.start
    }

    /// The physical address `offset` bytes in, if `offset .. offset + len` lies inside.
    pub fn at(&self, offset: u64, len: u64) -> Option<u64> {
        let end = offset.checked_add(len)?;
        (end <= self.size()).then_some(self.start + offset)
    }
}

/// Frames still free.
fn free_frames() -> u64 {
    FRAMES.lock().as_ref().map_or(0, |f| f.free_frames())
}

/// Carves the boot-time heap out of contiguous frames; returns (virtual address, bytes).
fn init_heap(phys_to_virt: impl Fn(u64) -> usize) -> (usize, usize) {
    let frames = HEAP_SIZE as u64 / PAGE_SIZE;
    let phys = FRAMES
        .lock()
        .as_mut()
        .and_then(|f| f.alloc_contiguous(frames))
        .expect("no contiguous 1 MiB of RAM for the kernel heap");
    let start = phys_to_virt(phys);
    // SAFETY: the frames were just allocated, are contiguous, mapped writable at `start` and
    // never handed out again, so the heap owns `start..start + HEAP_SIZE` for good.
    unsafe { HEAP.lock().init(start as *mut u8, HEAP_SIZE) };
    (start, HEAP_SIZE)
}
