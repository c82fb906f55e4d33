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
use kcore::mem::{PAGE_SIZE, PhysRegion};
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
}

/// Allocates one physical frame, zeroed through `phys_to_virt`.
pub fn alloc_zeroed_frame(phys_to_virt: impl Fn(u64) -> usize) -> Option<u64> {
    let frame = FRAMES.lock().as_mut()?.alloc()?;
    // SAFETY: the frame was just taken from the allocator, so nothing else refers to it, and
    // `phys_to_virt` maps usable RAM writable (init_frames's contract).
    unsafe { core::ptr::write_bytes(phys_to_virt(frame) as *mut u8, 0, PAGE_SIZE as usize) };
    Some(frame)
}

/// Allocates `count` physically contiguous frames; returns the first one's address.
pub fn alloc_contiguous_frames(count: u64) -> Option<u64> {
    FRAMES.lock().as_mut()?.alloc_contiguous(count)
}

/// Copies from physical memory at `phys` into `buf`.
pub fn read_phys(phys: u64, buf: &mut [u8]) {
    // SAFETY: callers pass frames of RAM they translated from a partition's page tables (or
    // own), which the direct/linear map covers; `buf` is kernel memory, distinct from them.
    unsafe {
        core::ptr::copy_nonoverlapping(phys_to_virt(phys) as *const u8, buf.as_mut_ptr(), buf.len())
    }
}

/// Copies `data` into physical memory at `phys`.
pub fn write_phys(phys: u64, data: &[u8]) {
    // SAFETY: as for `read_phys`; the destination frames belong to a partition (or the caller)
    // and no Rust reference points into them.
    unsafe {
        core::ptr::copy_nonoverlapping(data.as_ptr(), phys_to_virt(phys) as *mut u8, data.len())
    }
}

/// Zeroes the 4 KiB frame at `phys`.
pub fn zero_phys_page(phys: u64) {
    // SAFETY: as for `write_phys`.
    unsafe {
        core::ptr::write_bytes(
            phys_to_virt(phys & !(PAGE_SIZE - 1)) as *mut u8,
            0,
            PAGE_SIZE as usize,
        )
    }
}

/// Whether physical `[start, end)` may be device memory: not the first MiB (firmware, the
/// real-mode area on a PC) and no RAM the frame allocator manages. A BAR or MMIO range that
/// fails this is never mapped into a partition.
pub fn may_be_device_memory(start: u64, end: u64) -> bool {
    start >= 1 << 20
        && start < end
        && !FRAMES
            .lock()
            .as_ref()
            .is_some_and(|f| f.overlaps_managed(start, end))
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
