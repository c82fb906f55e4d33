//! The exception vector table and the reports of synchronous exceptions.
//!
//! Each of the 16 vectors saves x0/x1, puts its number in x0 and branches to a common path
//! that saves the rest of the registers in a [`TrapFrame`] and calls [`exception_entry`].
//! IRQs are dispatched to the GIC; every synchronous exception and SError from the kernel is
//! reported and stops the machine. Those (vectors 0, 3, 4 and 7) first move to a stack of their
//! own, so that a fault caused by overflowing the boot stack into its guard page is reported
//! rather than faulting again on every push.
//!
//! Where the frame goes. An exception from EL0 (vectors 8-15) saves the registers straight
//! into the current partition's context (`arch::context`): every return to EL0 leaves SP_EL1
//! at the end of the context it restored from, which is the current partition's, so the
//! entry's stores fill that context, and saving it on a switch costs nothing (as on x86_64).
//! The kernel then runs on the boot stack from its top: once a partition runs, nothing on the
//! boot stack is live (the boot code's loop is never resumed; see `exception_exit`). An
//! exception from EL1 (the idle loop, the boot code's wait, a kernel fault) saves its frame on
//! the stack in use, as a call would.

use aarch64_cpu::registers::{ESR_EL1, FAR_EL1, Readable, VBAR_EL1, Writeable};

use super::{gic, time};
use crate::arch::{ExitStatus, power_off};
use crate::exec::{Fault, FaultKind};

core::arch::global_asm!(
    r#"
.macro VECTOR number
    .balign 0x80
    sub     sp, sp, #272
    stp     x0, x1, [sp, #0]
    mov     x0, #\number
    b       exception_common
.endm

// From EL0: SP_EL1 is the end of the current partition's context (see the module
// documentation), so the frame is that context.
.macro USER_VECTOR number
    .balign 0x80
    sub     sp, sp, #272
    stp     x0, x1, [sp, #0]
    mov     x0, #\number
    b       user_common
.endm

.macro FATAL_VECTOR number
    .balign 0x80
    msr     tpidr_el1, x0
    adrp    x0, __fault_stack_top
    add     x0, x0, :lo12:__fault_stack_top
    mov     sp, x0
    mrs     x0, tpidr_el1
    sub     sp, sp, #272
    stp     x0, x1, [sp, #0]
    mov     x0, #\number
    b       exception_common
.endm

.macro SAVE_REST
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    mrs     x1, elr_el1
    stp     x30, x1, [sp, #240]
    mrs     x1, spsr_el1
    mrs     x2, sp_el0
    stp     x1, x2, [sp, #256]
.endm

// exception_entry's arguments, the vector number and the frame: its calling convention (it
// preserves no register, all are restored from a frame) passes them in x20 and x21, saved.
.macro ENTRY_ARGS
    mov     x20, x0
    mov     x21, sp
.endm

// The frame is the partition's context: run the kernel on the boot stack, from its top less
// the room of a frame that exception_exit's `add` gives back (an exit to EL1, into the idle
// loop, then leaves SP_EL1 at the top).
.macro TO_BOOT_STACK
    adrp    x1, __stack_top - 272
    add     sp, x1, :lo12:__stack_top - 272
.endm

.section .text
.balign 2048
.global exception_vectors
exception_vectors:
    FATAL_VECTOR 0
    VECTOR 1
    VECTOR 2
    FATAL_VECTOR 3
    FATAL_VECTOR 4
    VECTOR 5
    VECTOR 6
    FATAL_VECTOR 7
    // A synchronous exception from EL0 (a system call, above all): user_common in line.
    .balign 0x80
    sub     sp, sp, #272
    stp     x0, x1, [sp, #0]
    SAVE_REST
    mov     x20, #8
    mov     x21, sp
    TO_BOOT_STACK
    bl      exception_entry
    b       exception_exit
    USER_VECTOR 9
    USER_VECTOR 10
    USER_VECTOR 11
    USER_VECTOR 12
    USER_VECTOR 13
    USER_VECTOR 14
    USER_VECTOR 15

user_common:
    SAVE_REST
    ENTRY_ARGS
    TO_BOOT_STACK
    bl      exception_entry
// x0: the frame to restore from: the trap frame or a saved context (exception_entry).
exception_exit:
    ldp     x1, x2, [x0, #256]
    msr     spsr_el1, x1
    msr     sp_el0, x2
    // Where SP_EL1 is left. Back to EL0 (the frame is then always the current partition's
    // context): the end of that context, which its next exception fills. Back to EL1
    // (SPSR.M[3:0] not 0: the idle loop, or the code an exception from EL1 interrupted):
    // where the entry found it, above the frame (for an entry from EL0, the top of the boot
    // stack). The boot code's wait loop is resumed only by an exit from its own exception
    // that switched nothing; after any exit to EL0 nothing on the boot stack is live. The
    // loads below SP that follow are safe: every exception is masked until the `eret`.
    tst     x1, #0b1111
    b.ne    2f
    add     sp, x0, #272
1:
    ldp     x30, x1, [x0, #240]
    msr     elr_el1, x1
    ldp     x2, x3, [x0, #16]
    ldp     x4, x5, [x0, #32]
    ldp     x6, x7, [x0, #48]
    ldp     x8, x9, [x0, #64]
    ldp     x10, x11, [x0, #80]
    ldp     x12, x13, [x0, #96]
    ldp     x14, x15, [x0, #112]
    ldp     x16, x17, [x0, #128]
    ldp     x18, x19, [x0, #144]
    ldp     x20, x21, [x0, #160]
    ldp     x22, x23, [x0, #176]
    ldp     x24, x25, [x0, #192]
    ldp     x26, x27, [x0, #208]
    ldp     x28, x29, [x0, #224]
    ldp     x0, x1, [x0, #0]
    eret
2:
    add     sp, sp, #272
    b       1b

exception_common:
    SAVE_REST
    ENTRY_ARGS
    bl      exception_entry
    b       exception_exit
"#
);

/// The registers saved on exception entry, in the layout the assembly above writes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TrapFrame {
    pub x: [u64; 31],
    pub elr: u64,
    pub spsr: u64,
    /// The user stack pointer.
    pub sp_el0: u64,
}

unsafe extern "C" {
    safe static idle_loop: u8;
    safe static idle_poll_loop: u8;
}

core::arch::global_asm!(
    ".global idle_loop",
    "idle_loop:",
    "    msr daifclr, #2",
    "    wfi",
    "    b idle_loop",
    // Near a timer event: IRQs unmasked, no wfi, so the interrupt finds the CPU running.
    ".global idle_poll_loop",
    "idle_poll_loop:",
    "    msr daifclr, #2",
    "1:",
    "    b 1b"
);

/// SPSR for EL0t (user mode) with every exception unmasked.
const SPSR_EL0T: u64 = 0;
/// SPSR for EL1h (kernel, own stack) with IRQs unmasked.
const SPSR_EL1H: u64 = 0b0101;

impl TrapFrame {
    /// All registers zero.
    pub const ZERO: Self = TrapFrame {
        x: [0; 31],
        elr: 0,
        spsr: 0,
        sp_el0: 0,
    };

    /// A frame that starts a partition's thread at `entry` with stack `stack_top` at EL0.
    pub fn user(entry: u64, stack_top: u64) -> Self {
        TrapFrame {
            x: [0; 31],
            elr: entry,
            spsr: SPSR_EL0T,
            sp_el0: stack_top,
        }
    }

    /// A frame that runs the kernel's idle loop until the next interrupt.
    ///
    /// The `eret` to EL1h leaves SP_EL1 where the frame's restore left it: the top of the trap
    /// stack, just above where the next exception writes its frame. That is safe because the
    /// idle loop (`msr`, `wfi`, `b`) never touches the stack, so no frame below it can be
    /// overwritten; an IRQ arriving in it saves its frame at that same place, as one from EL0
    /// would. (x86_64 needs a separate idle stack because its idle loop is Rust code.)
    pub fn idle() -> Self {
        TrapFrame {
            x: [0; 31],
            elr: core::ptr::addr_of!(idle_loop) as u64,
            spsr: SPSR_EL1H,
            sp_el0: 0,
        }
    }

    /// A frame that runs the kernel's polling idle loop (IRQs unmasked, no `wfi`) until the
    /// next interrupt: for the last moments before a timer event. Like `idle_loop`, it never
    /// touches the stack.
    pub fn idle_poll() -> Self {
        TrapFrame {
            elr: core::ptr::addr_of!(idle_poll_loop) as u64,
            ..Self::idle()
        }
    }

    /// Whether the exception came from EL0.
    pub fn is_from_user(&self) -> bool {
        self.spsr & 0b1111 == 0
    }

    /// The syscall number (x8) and its arguments (x0-x4).
    pub fn syscall(&self) -> (usize, [usize; 5]) {
        let x = &self.x;
        (
            x[8] as usize,
            [
                x[0] as usize,
                x[1] as usize,
                x[2] as usize,
                x[3] as usize,
                x[4] as usize,
            ],
        )
    }

    /// Sets the syscall's result.
    pub fn set_return(&mut self, value: usize) {
        self.x[0] = value as u64;
    }

    /// The program counter where the exception happened.
    pub fn pc(&self) -> u64 {
        self.elr
    }

    /// Copies `src` over this frame (saving a partition's context).
    pub fn copy_from(&mut self, src: &TrapFrame) {
        *self = *src;
    }
}

const KINDS: [&str; 4] = ["synchronous exception", "IRQ", "FIQ", "SError"];

/// Installs the vector table.
pub fn init() {
    unsafe extern "C" {
        static exception_vectors: u8;
    }
    let vectors = core::ptr::addr_of!(exception_vectors) as u64;
    VBAR_EL1.set(vectors);
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// Called by the vector code with the vector number (0-15) and the saved registers. Returns
/// the frame to restore the registers from: `frame`, or the saved context of the partition
/// the kernel switched to ([`crate::arch::context::resume_frame`]), which the vector code only
/// reads (IRQs stay masked until the `eret`). It preserves no register of its own
/// (`rust-preserve-none`): the vector code restores all from a frame.
#[unsafe(no_mangle)]
extern "rust-preserve-none" fn exception_entry(
    vector: u64,
    frame: *mut TrapFrame,
) -> *const TrapFrame {
    // SAFETY: the vector code passes the frame it just filled: a valid, aligned TrapFrame (the
    // current partition's context for an exception from EL0, see `arch::context`, or on the
    // stack in use), which nothing else references during the entry; the reference ends here.
    handle(vector, unsafe { &mut *frame });
    let resume = crate::arch::context::resume_frame();
    if resume.is_null() { frame } else { resume }
}

/// Exception class (ESR_EL1.EC) of an SVC from AArch64: a system call.
const EC_SVC64: u64 = 0x15;
/// Vector 8: a synchronous exception from EL0 in AArch64.
const VECTOR_EL0_SYNC: u64 = 8;

fn handle(vector: u64, frame: &mut TrapFrame) {
    // System calls first, in line: the most frequent entry. Vector 8 is taken only from EL0,
    // so the frame's SPSR need not be looked at, nor FAR_EL1 read.
    if vector == VECTOR_EL0_SYNC && (ESR_EL1.get() >> 26) & 0x3f == EC_SVC64 {
        crate::exec::on_syscall(frame);
    } else {
        other(vector, frame);
    }
}

/// Every entry but a system call.
#[cold]
#[inline(never)]
fn other(vector: u64, frame: &mut TrapFrame) {
    let kind = (vector % 4) as usize;
    if kind == 1 {
        match gic::handle_irq() {
            Some(intid) if intid == time::timer_intid() => crate::exec::on_tick(frame),
            Some(intid) if intid >= gic::FIRST_SPI => {
                crate::exec::on_device_irq(frame, super::irq::IrqSource::Line(intid));
            }
            _ => {}
        }
        return;
    }
    let from_user = frame.is_from_user();
    let esr = ESR_EL1.get();
    let far = FAR_EL1.get();
    if from_user && kind == 0 {
        // (A system call, vector 8, never comes here: `handle` took it.)
        let class = (esr >> 26) & 0x3f;
        let kind = FaultKind::from_aarch64_esr(esr);
        let address = matches!(class, 0x20 | 0x21 | 0x22 | 0x24 | 0x25 | 0x26).then_some(far);
        crate::exec::on_user_fault(
            frame,
            Fault {
                kind,
                pc: frame.elr,
                address,
            },
        );
        return;
    }
    let mode = if from_user { "user" } else { "kernel" };
    let what = if kind == 0 {
        describe(esr)
    } else {
        Description::Text(KINDS[kind])
    };
    crate::klog::emergency(format_args!("EXCEPTION: {what} in {mode} mode"));
    crate::klog::emergency(format_args!("  ESR={esr:#010x} FAR={far:#018x}"));
    if kind == 0 && super::paging::stack_guard().contains(&far) {
        crate::klog::emergency(format_args!(
            "  the address is the boot stack's guard page: kernel stack overflow"
        ));
    }
    crate::klog::emergency(format_args!(
        "  ELR={:#018x} SPSR={:#010x} LR={:#018x}",
        frame.elr, frame.spsr, frame.x[30]
    ));
    crate::klog::emergency(format_args!("kernel fault: stopping the system"));
    power_off(ExitStatus::Failure)
}

/// A readable name of a synchronous exception, from the ESR's class and syndrome.
enum Description {
    Text(&'static str),
    Abort {
        data: bool,
        write: bool,
        status: &'static str,
        level: Option<u64>,
    },
    Class(u64),
}

impl core::fmt::Display for Description {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Description::Text(t) => f.write_str(t),
            Description::Abort {
                data,
                write,
                status,
                level,
            } => {
                let kind = if *data {
                    "data abort"
                } else {
                    "instruction abort"
                };
                let access = if !data {
                    "fetch"
                } else if *write {
                    "write"
                } else {
                    "read"
                };
                write!(f, "{kind} ({access}, {status}")?;
                if let Some(level) = level {
                    write!(f, " level {level}")?;
                }
                f.write_str(")")
            }
            Description::Class(ec) => write!(f, "synchronous exception class {ec:#x}"),
        }
    }
}

fn describe(esr: u64) -> Description {
    let class = (esr >> 26) & 0x3f;
    match class {
        0x00 => Description::Text("undefined instruction"),
        0x15 => Description::Text("SVC from AArch64"),
        0x22 => Description::Text("PC alignment fault"),
        0x26 => Description::Text("SP alignment fault"),
        0x3c => Description::Text("BRK instruction"),
        0x20 | 0x21 | 0x24 | 0x25 => {
            let status = esr & 0x3f;
            let (name, level) = match status >> 2 {
                0b0000 => ("address size fault", Some(status & 3)),
                0b0001 => ("translation fault", Some(status & 3)),
                0b0010 => ("access flag fault", Some(status & 3)),
                0b0011 => ("permission fault", Some(status & 3)),
                _ if status == 0b010000 => ("synchronous external abort", None),
                _ if status == 0b100001 => ("alignment fault", None),
                _ => ("other fault", None),
            };
            Description::Abort {
                data: class >= 0x24,
                write: esr & (1 << 6) != 0,
                status: name,
                level,
            }
        }
        other => Description::Class(other),
    }
}
