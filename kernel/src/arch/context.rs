//! The partitions' saved contexts, in storage the architecture owns rather than in the
//! partition table: the entry code saves the user registers straight into the current
//! partition's context (its end is the kernel entry stack top: on x86_64 `SYSCALL_KERNEL_RSP`
//! and the TSS's `rsp0`, set on each switch; on aarch64 SP_EL1, which every return to EL0
//! leaves there), so the trap frame of an entry from user mode *is* that context and saving it
//! costs nothing ([`save`] copies only a frame from kernel mode). The exit path restores the
//! registers straight from the context the kernel switched to ([`resume_frame`]).
//!
//! One CPU, and every function runs in a kernel entry with interrupts masked (or at boot before
//! any partition runs). The portable kernel never holds a reference into this storage except
//! the trap frame the entry hands it, and writes another partition's context only through these
//! functions; it never writes the current partition's context through them while it still uses
//! the trap frame (a restart of the faulting partition happens after its frame is dropped).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicPtr, Ordering};

use super::TrapFrame;

/// Contexts, one per partition slot, plus the idle loop's.
const SLOTS: usize = crate::exec::MAX_PARTITIONS + 1;
const IDLE: usize = SLOTS - 1;

/// One context; 16-byte aligned, and `TrapFrame` is a multiple of 16 bytes, so the end of each
/// (the entry stack top) is 16-byte aligned as the ABI (and aarch64's SP alignment check)
/// wants.
#[repr(C, align(16))]
struct Slot(UnsafeCell<TrapFrame>);

struct Contexts([Slot; SLOTS]);

// SAFETY: one CPU; the contexts are only read and written in kernel entries with interrupts
// masked (see the module documentation), and by the entry and exit code of those entries.
unsafe impl Sync for Contexts {}

const _: () = assert!(size_of::<TrapFrame>() % 16 == 0);

static CONTEXTS: Contexts = Contexts([const { Slot(UnsafeCell::new(TrapFrame::ZERO)) }; SLOTS]);

/// The context the kernel entry in progress resumes, when it switched: the exit path restores
/// the registers from it. Null: resume the trap frame.
static RESUME: AtomicPtr<TrapFrame> = AtomicPtr::new(core::ptr::null_mut());

fn slot(index: usize) -> *mut TrapFrame {
    CONTEXTS.0[index].0.get()
}

/// Sets partition `index`'s context (a new or restarted partition's start). Never the context
/// of the trap frame in use (see the module documentation).
pub fn set(index: usize, value: TrapFrame) {
    // SAFETY: `slot` is a valid, aligned TrapFrame in static memory; no reference to it is
    // alive (the caller's promise), one CPU with interrupts masked.
    unsafe { slot(index).write(value) };
}

/// Sets the system call result in partition `index`'s context; `index` is not the current
/// partition (that one's result goes into the trap frame).
pub fn set_return(index: usize, value: usize) {
    // SAFETY: as in `set`: no reference to another partition's context is alive.
    unsafe { (*slot(index)).set_return(value) };
}

/// Saves the trap frame as partition `index`'s context (the current partition): nothing to do
/// when the entry saved it there already (from user mode).
pub fn save(index: usize, frame: &TrapFrame) {
    let to = slot(index);
    if !core::ptr::eq(to, frame) {
        // SAFETY: `to` is a valid, aligned TrapFrame distinct from `frame` (checked), and no
        // other reference to it is alive.
        unsafe { (*to).copy_from(frame) };
    }
}

/// Partition `index` runs next: the exit path restores its context, and its next entry from
/// user mode saves into it.
pub fn resume(index: usize) {
    let to = slot(index);
    super::set_entry_stack(to.wrapping_add(1) as u64);
    RESUME.store(to, Ordering::Relaxed);
}

/// The idle loop runs next: halting until an interrupt, or, with `poll`, spinning with
/// interrupts enabled (a timer event is near, and a halted CPU would take it late).
pub fn resume_idle(poll: bool) {
    let to = slot(IDLE);
    let frame = if poll {
        TrapFrame::idle_poll()
    } else {
        TrapFrame::idle()
    };
    // SAFETY: the idle slot is never a partition's, so never the trap frame of an entry (the
    // idle loop's entries are from kernel mode and push onto its own stack); no reference to
    // it is alive.
    unsafe { to.write(frame) };
    RESUME.store(to, Ordering::Relaxed);
}

/// Called by the exit path once the kernel entry's work is done: the context to restore the
/// registers from, if not the trap frame.
pub fn resume_frame() -> *const TrapFrame {
    // On aarch64 a load and a store rather than a swap, which is an exclusive-access loop
    // there: one CPU, interrupts masked, so nothing can come between them. On x86_64 the swap
    // is one `xchg`, an instruction fewer.
    #[cfg(target_arch = "aarch64")]
    {
        let resume = RESUME.load(Ordering::Relaxed);
        RESUME.store(core::ptr::null_mut(), Ordering::Relaxed);
        resume
    }
    #[cfg(not(target_arch = "aarch64"))]
    RESUME.swap(core::ptr::null_mut(), Ordering::Relaxed)
}
