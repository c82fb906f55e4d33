//! Kernel entries: system calls, the timer and CPU exceptions all build one [`TrapFrame`] and
//! leave through `iretq` from whatever frame the kernel chose. From user mode the frame is built
//! straight in the current partition's context (`arch::context`: the entry stack top is its
//! end), and the kernel then runs on the trap stack; from kernel mode (the idle loop) it is on
//! the stack in use. The kernel keeps no per-thread kernel stacks: switching threads is
//! switching frames (the model of Hubris and seL4), so a kernel entry never blocks and every
//! path is bounded.
//!
//! System calls also leave through `iretq` rather than `sysretq`: slower by a few dozen cycles,
//! but immune to the `sysretq` non-canonical-RIP trap in ring 0. The return address of a
//! `syscall` is additionally checked to be a user address, and partitions can never map the
//! last page below the canonical boundary (bulkhead_abi::USER_TOP).

use core::sync::atomic::Ordering;

use x86_64::VirtAddr;
use x86_64::registers::control::Cr2;
use x86_64::registers::model_specific::{Efer, EferFlags, LStar, SFMask, Star};
use x86_64::registers::rflags::RFlags;
use x86_64::structures::idt::InterruptDescriptorTable;

use super::gdt::{self, GuardedStack};
use super::idt::TIMER_VECTOR;
use super::{apic, irq, time};
use crate::arch::{ExitStatus, power_off};
use crate::exec::{Fault, FaultKind};

/// The pseudo-vector recorded in a frame built by the `syscall` entry.
pub const SYSCALL_VECTOR: u64 = 0x100;

/// Registers saved on every kernel entry, lowest address first (the order the entry code
/// pushes them in reverse).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

static TRAP_STACK: GuardedStack<{ 16 * 4096 }> = GuardedStack::new();
static IDLE_STACK: GuardedStack<{ 4 * 4096 }> = GuardedStack::new();

/// Kernel stack pointer loaded by the `syscall` entry: the end of the current partition's
/// context (see `arch::context`), so that the entry's pushes save the registers there.
#[unsafe(no_mangle)]
static mut SYSCALL_KERNEL_RSP: u64 = 0;
/// The top of the trap stack, which an entry from user mode moves to once it has saved the
/// registers into the partition's context.
#[unsafe(no_mangle)]
static mut TRAP_STACK_TOP: u64 = 0;
/// Scratch slot for the user stack pointer during the `syscall` entry (one CPU, IRQs masked).
#[unsafe(no_mangle)]
static mut SYSCALL_USER_RSP: u64 = 0;

/// Vectors that get an entry stub, and whether the CPU pushes an error code for them.
const STUB_VECTORS: [(u8, bool); 18] = [
    (0, false),
    (1, false),
    (3, false),
    (4, false),
    (5, false),
    (6, false),
    (7, false),
    (10, true),
    (11, true),
    (12, true),
    (13, true),
    (14, true),
    (16, false),
    (17, true),
    (19, false),
    (20, false),
    (21, true),
    (TIMER_VECTOR, false),
];

macro_rules! stub {
    (noerr $v:literal) => {
        concat!(
            "trap_stub_",
            $v,
            ":\n    push 0\n    push ",
            $v,
            "\n    jmp trap_common\n"
        )
    };
    (err $v:literal) => {
        concat!(
            "trap_stub_",
            $v,
            ":\n    push ",
            $v,
            "\n    jmp trap_common\n"
        )
    };
}

// The stubs, and a table of their addresses in the order of STUB_VECTORS.
core::arch::global_asm!(
    stub!(noerr "0"),
    stub!(noerr "1"),
    stub!(noerr "3"),
    stub!(noerr "4"),
    stub!(noerr "5"),
    stub!(noerr "6"),
    stub!(noerr "7"),
    stub!(err "10"),
    stub!(err "11"),
    stub!(err "12"),
    stub!(err "13"),
    stub!(err "14"),
    stub!(noerr "16"),
    stub!(err "17"),
    stub!(noerr "19"),
    stub!(noerr "20"),
    stub!(err "21"),
    stub!(noerr "32"),
    // Offsets from the table itself: position-independent, so no relocation is needed.
    ".section .rodata",
    ".balign 4",
    ".global trap_stub_table",
    "trap_stub_table:",
    "    .long trap_stub_0 - trap_stub_table, trap_stub_1 - trap_stub_table",
    "    .long trap_stub_3 - trap_stub_table, trap_stub_4 - trap_stub_table",
    "    .long trap_stub_5 - trap_stub_table, trap_stub_6 - trap_stub_table",
    "    .long trap_stub_7 - trap_stub_table, trap_stub_10 - trap_stub_table",
    "    .long trap_stub_11 - trap_stub_table, trap_stub_12 - trap_stub_table",
    "    .long trap_stub_13 - trap_stub_table, trap_stub_14 - trap_stub_table",
    "    .long trap_stub_16 - trap_stub_table, trap_stub_17 - trap_stub_table",
    "    .long trap_stub_19 - trap_stub_table, trap_stub_20 - trap_stub_table",
    "    .long trap_stub_21 - trap_stub_table, trap_stub_32 - trap_stub_table",
    ".text",
);

// Device vectors: one 16-byte stub per vector from LINE_VECTOR_BASE up, in order, so the
// stub of vector v is at device_stubs + 16 * (v - LINE_VECTOR_BASE).
core::arch::global_asm!(
    ".balign 16",
    ".global device_stubs",
    "device_stubs:",
    ".set device_vector, {first}",
    ".rept {count}",
    "    .balign 16",
    "    push 0",
    "    push device_vector",
    "    jmp trap_common",
    "    .set device_vector, device_vector + 1",
    ".endr",
    first = const irq::LINE_VECTOR_BASE,
    count = const (irq::DEVICE_VECTOR_END - irq::LINE_VECTOR_BASE) as usize,
);

core::arch::global_asm!(
    ".global trap_common",
    "trap_common:",
    "    push rax",
    "    push rbx",
    "    push rcx",
    "    push rdx",
    "    push rsi",
    "    push rdi",
    "    push rbp",
    "    push r8",
    "    push r9",
    "    push r10",
    "    push r11",
    "    push r12",
    "    push r13",
    "    push r14",
    "    push r15",
    // trap_dispatch's argument (its calling convention passes the first one in r12).
    "    mov r12, rsp",
    // From user mode the frame is the partition's context (the entry stack top is its end):
    // run the kernel on the trap stack. From kernel mode (the idle loop, a kernel fault) the
    // frame is on the stack in use, which the kernel keeps using.
    "    test byte ptr [rsp + 144], 3",
    "    jz 2f",
    "    mov rsp, [rip + TRAP_STACK_TOP]",
    "2:",
    "    cld",
    // Every register is restored from a frame below, so trap_dispatch need preserve none.
    "    call trap_dispatch",
    "trap_restore:",
    // Restore from the frame trap_dispatch returns: this one, or a saved context.
    "    mov rsp, rax",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop r11",
    "    pop r10",
    "    pop r9",
    "    pop r8",
    "    pop rbp",
    "    pop rdi",
    "    pop rsi",
    "    pop rdx",
    "    pop rcx",
    "    pop rbx",
    "    pop rax",
    "    add rsp, 16",
    "    iretq",
    ".global syscall_entry",
    "syscall_entry:",
    "    mov [rip + SYSCALL_USER_RSP], rsp",
    "    mov rsp, [rip + SYSCALL_KERNEL_RSP]",
    "    push 0x1b",
    "    push qword ptr [rip + SYSCALL_USER_RSP]",
    "    push r11",
    "    push 0x23",
    "    push rcx",
    "    push 0",
    "    push 0x100",
    // trap_common's pushes and call, without its test of the mode.
    "    push rax",
    "    push rbx",
    "    push rcx",
    "    push rdx",
    "    push rsi",
    "    push rdi",
    "    push rbp",
    "    push r8",
    "    push r9",
    "    push r10",
    "    push r11",
    "    push r12",
    "    push r13",
    "    push r14",
    "    push r15",
    // From user mode: on to the trap stack (SYSCALL has cleared DF, see SFMASK).
    "    mov r12, rsp",
    "    mov rsp, [rip + TRAP_STACK_TOP]",
    "    call trap_dispatch",
    "    jmp trap_restore",
    ".global idle_loop",
    "idle_loop:",
    "    sti",
    "    hlt",
    "    jmp idle_loop",
    // Near a timer event: interrupts enabled, no halt, so the interrupt finds the CPU running.
    // No `pause` either: QEMU's TCG leaves its translated code on each one, which makes the
    // loop a hundred times slower to emulate.
    ".global idle_poll_loop",
    "idle_poll_loop:",
    "    sti",
    "3:",
    "    jmp 3b",
);

unsafe extern "C" {
    safe static syscall_entry: u8;
    safe static idle_loop: u8;
    safe static idle_poll_loop: u8;
    safe static trap_stub_table: [i32; 18];
    safe static device_stubs: u8;
}

/// Routes the vectors that can come from a partition (and the timer) through the stubs.
pub fn install(idt: &mut InterruptDescriptorTable) {
    let table = trap_stub_table.as_ptr() as u64;
    for (&(vector, _), &offset) in STUB_VECTORS.iter().zip(trap_stub_table.iter()) {
        let addr = VirtAddr::new(table.wrapping_add_signed(offset as i64));
        // SAFETY: each stub is assembly above that builds a TrapFrame and ends in `iretq`,
        // matching the frame the CPU pushes for this vector (with or without error code, as
        // STUB_VECTORS says and the entry's type confirms).
        let entry = unsafe {
            match vector {
                0 => idt.divide_error.set_handler_addr(addr),
                1 => idt.debug.set_handler_addr(addr),
                3 => idt.breakpoint.set_handler_addr(addr),
                4 => idt.overflow.set_handler_addr(addr),
                5 => idt.bound_range_exceeded.set_handler_addr(addr),
                6 => idt.invalid_opcode.set_handler_addr(addr),
                7 => idt.device_not_available.set_handler_addr(addr),
                10 => idt.invalid_tss.set_handler_addr(addr),
                11 => idt.segment_not_present.set_handler_addr(addr),
                12 => idt.stack_segment_fault.set_handler_addr(addr),
                13 => idt.general_protection_fault.set_handler_addr(addr),
                14 => idt.page_fault.set_handler_addr(addr),
                16 => idt.x87_floating_point.set_handler_addr(addr),
                17 => idt.alignment_check.set_handler_addr(addr),
                19 => idt.simd_floating_point.set_handler_addr(addr),
                20 => idt.virtualization.set_handler_addr(addr),
                21 => idt.cp_protection_exception.set_handler_addr(addr),
                v => idt[v].set_handler_addr(addr),
            }
        };
        if vector == 3 {
            // `int3` from user mode is a partition's breakpoint, handled as its fault.
            entry.set_privilege_level(x86_64::PrivilegeLevel::Ring3);
        }
    }
    let stubs = &device_stubs as *const u8 as u64;
    for vector in irq::LINE_VECTOR_BASE..irq::DEVICE_VECTOR_END {
        let addr = VirtAddr::new(stubs + 16 * u64::from(vector - irq::LINE_VECTOR_BASE));
        // SAFETY: each device stub (assembly above) pushes a zero error code and its vector
        // and joins trap_common, which builds a TrapFrame and ends in `iretq`: the frame an
        // external interrupt gets. The entry stays at DPL 0, so `int n` from user mode faults.
        unsafe { idt[vector].set_handler_addr(addr) };
    }
}

/// Guard pages of the trap and idle stacks: (trap, idle).
pub fn guard_pages() -> (u64, u64) {
    (TRAP_STACK.guard_page(), IDLE_STACK.guard_page())
}

/// Records the stack the CPU switches to on entry from user mode; before the GDT is loaded.
pub fn set_kernel_stack() {
    gdt::set_kernel_stack(TRAP_STACK.top());
}

/// Sets up the `syscall` instruction; after the GDT is loaded.
pub fn init() {
    let top = TRAP_STACK.top();
    // SAFETY: written at boot with interrupts masked, before any `syscall` can run; the entry
    // code only reads them (SYSCALL_KERNEL_RSP is then set on each switch, `set_entry_stack`).
    unsafe {
        SYSCALL_KERNEL_RSP = top.as_u64();
        TRAP_STACK_TOP = top.as_u64();
    };
    let sel = gdt::selectors();
    let entry = VirtAddr::new(&syscall_entry as *const u8 as u64);
    LStar::write(entry);
    // SYSCALL masks IF (no interrupt before the kernel stack is loaded), DF, TF and AC.
    SFMask::write(
        RFlags::INTERRUPT_FLAG
            | RFlags::DIRECTION_FLAG
            | RFlags::TRAP_FLAG
            | RFlags::ALIGNMENT_CHECK,
    );
    Star::write(
        sel.user_code,
        sel.user_data,
        sel.kernel_code,
        sel.kernel_data,
    )
    .expect("GDT segments are in the order SYSCALL/SYSRET require");
    // SAFETY: enabling SYSCALL only makes the `syscall` instruction usable; LSTAR, STAR and
    // SFMASK are set above.
    unsafe { Efer::update(|f| f.insert(EferFlags::SYSTEM_CALL_EXTENSIONS)) };
}

/// Sets the stack the next entry from user mode saves the registers on (`syscall` and the
/// TSS's `rsp0`): `top` is the end of the context of the partition that runs next.
pub fn set_entry_stack(top: u64) {
    // SAFETY: one CPU, in a kernel entry with interrupts masked: no `syscall` entry reads it
    // concurrently; it is a plain u64 in static memory (stored by name: no GOT load).
    unsafe {
        core::arch::asm!(
            "mov [rip + SYSCALL_KERNEL_RSP], {}",
            in(reg) top,
            options(nostack, preserves_flags)
        )
    };
    gdt::set_rsp0(top);
}

impl TrapFrame {
    /// All registers zero.
    pub const ZERO: Self = TrapFrame {
        r15: 0,
        r14: 0,
        r13: 0,
        r12: 0,
        r11: 0,
        r10: 0,
        r9: 0,
        r8: 0,
        rbp: 0,
        rdi: 0,
        rsi: 0,
        rdx: 0,
        rcx: 0,
        rbx: 0,
        rax: 0,
        vector: 0,
        error_code: 0,
        rip: 0,
        cs: 0,
        rflags: 0,
        rsp: 0,
        ss: 0,
    };

    /// A frame that starts a partition's thread at `entry` with stack `stack_top`, in user
    /// mode with interrupts enabled.
    pub fn user(entry: u64, stack_top: u64) -> Self {
        let sel = gdt::selectors();
        TrapFrame {
            rip: entry,
            cs: sel.user_code.0 as u64,
            rflags: RFlags::INTERRUPT_FLAG.bits() | 0x2,
            rsp: stack_top,
            ss: sel.user_data.0 as u64,
            ..Default::default()
        }
    }

    /// A frame that runs the kernel's idle loop (on its own stack) until the next interrupt.
    pub fn idle() -> Self {
        let sel = gdt::selectors();
        TrapFrame {
            rip: &idle_loop as *const u8 as u64,
            cs: sel.kernel_code.0 as u64,
            rflags: 0x2,
            rsp: IDLE_STACK.top().as_u64(),
            ss: sel.kernel_data.0 as u64,
            ..Default::default()
        }
    }

    /// A frame that runs the kernel's polling idle loop (interrupts enabled, no `hlt`) until
    /// the next interrupt: for the last moments before a timer event.
    pub fn idle_poll() -> Self {
        TrapFrame {
            rip: &idle_poll_loop as *const u8 as u64,
            ..Self::idle()
        }
    }

    /// Whether the trap came from user mode.
    pub fn is_from_user(&self) -> bool {
        self.cs & 3 == 3
    }

    /// The syscall number and its arguments.
    pub fn syscall(&self) -> (usize, [usize; 5]) {
        (
            self.rax as usize,
            [
                self.rdi as usize,
                self.rsi as usize,
                self.rdx as usize,
                self.r10 as usize,
                self.r8 as usize,
            ],
        )
    }

    /// Sets the syscall's result.
    pub fn set_return(&mut self, value: usize) {
        self.rax = value as u64;
    }

    /// The program counter where the trap happened.
    pub fn pc(&self) -> u64 {
        self.rip
    }

    /// Copies `src` over this frame: what saving a partition's context costs on every switch,
    /// so one `rep movsq` rather than a call to the generic `memcpy`.
    pub fn copy_from(&mut self, src: &TrapFrame) {
        const WORDS: usize = size_of::<TrapFrame>() / 8;
        // SAFETY: `self` and `src` are valid, aligned TrapFrames of WORDS words (`repr(C)`,
        // all u64) and cannot overlap (one is borrowed mutably, the other shared); the string
        // copy goes forward because the kernel runs with DF clear (the entry code clears it).
        unsafe {
            core::arch::asm!(
                "rep movsq",
                inout("rcx") WORDS => _,
                inout("rdi") core::ptr::from_mut(self) => _,
                inout("rsi") core::ptr::from_ref(src) => _,
                options(nostack, preserves_flags)
            )
        };
    }
}

fn name(vector: u64) -> &'static str {
    match vector {
        0 => "divide error (#DE)",
        1 => "debug (#DB)",
        3 => "breakpoint (#BP)",
        4 => "overflow (#OF)",
        5 => "bound range exceeded (#BR)",
        6 => "invalid opcode (#UD)",
        7 => "device not available (#NM)",
        10 => "invalid TSS (#TS)",
        11 => "segment not present (#NP)",
        12 => "stack-segment fault (#SS)",
        13 => "general protection fault (#GP)",
        14 => "page fault (#PF)",
        16 => "x87 floating-point exception (#MF)",
        17 => "alignment check (#AC)",
        19 => "SIMD floating-point exception (#XM)",
        20 => "virtualization exception (#VE)",
        21 => "control protection exception (#CP)",
        _ => "exception",
    }
}

/// Reports a fault in the kernel itself and stops the machine.
fn kernel_fault(frame: &TrapFrame) -> ! {
    if frame.vector == 14 {
        let code = frame.error_code;
        let access = if code & 0x10 != 0 {
            "instruction fetch"
        } else if code & 2 != 0 {
            "write"
        } else {
            "read"
        };
        let cause = if code & 1 != 0 {
            "protection violation"
        } else {
            "page not present"
        };
        crate::klog::emergency(format_args!(
            "page fault: {access} at address CR2={:#018x} ({cause})",
            Cr2::read_raw()
        ));
    }
    crate::klog::emergency(format_args!(
        "EXCEPTION: {} (vector {}) in kernel mode",
        name(frame.vector),
        frame.vector
    ));
    crate::klog::emergency(format_args!("  error code {:#x}", frame.error_code));
    crate::klog::emergency(format_args!(
        "  RIP={:#018x} CS={:#x} RFLAGS={:#x} RSP={:#018x} SS={:#x}",
        frame.rip, frame.cs, frame.rflags, frame.rsp, frame.ss
    ));
    crate::klog::emergency(format_args!(
        "  RAX={:#x} RBX={:#x} RCX={:#x} RDX={:#x} RSI={:#x} RDI={:#x} RBP={:#x}",
        frame.rax, frame.rbx, frame.rcx, frame.rdx, frame.rsi, frame.rdi, frame.rbp
    ));
    crate::klog::emergency(format_args!("kernel fault: stopping the system"));
    power_off(ExitStatus::Failure)
}

/// Called by the entry code with the saved registers; may replace them to switch threads.
/// Returns the frame to restore the registers from and return through: `frame`, or the saved
/// context of the partition the kernel switched to ([`crate::arch::context::resume_frame`]).
/// The entry code moves the stack pointer there, pops the registers and leaves with `iretq`,
/// which only reads the frame; interrupts stay masked until then and the NMI and double-fault
/// handlers have stacks of their own, so nothing is pushed onto a saved context.
#[unsafe(no_mangle)]
extern "rust-preserve-none" fn trap_dispatch(frame: *mut TrapFrame) -> *const TrapFrame {
    // SAFETY: the entry code passes the frame it just pushed: a valid, aligned TrapFrame (the
    // current partition's context for an entry from user mode, see `arch::context`, or on the
    // stack in use), which nothing else references during the entry; the reference ends here.
    handle(unsafe { &mut *frame });
    let resume = crate::arch::context::resume_frame();
    if resume.is_null() { frame } else { resume }
}

#[inline(always)]
fn syscall(frame: &mut TrapFrame) {
    // A `syscall` whose return address is not a user address cannot have come from a
    // well-formed partition; treat it as that partition's fault.
    if frame.rip >= abi::USER_TOP {
        let fault = Fault {
            kind: FaultKind::GeneralProtection,
            pc: frame.rip,
            address: Some(frame.rip),
        };
        crate::exec::on_user_fault(frame, fault);
    } else {
        crate::exec::on_syscall(frame);
    }
}

fn handle(frame: &mut TrapFrame) {
    // System calls first, in line: the most frequent entry.
    if frame.vector == SYSCALL_VECTOR {
        syscall(frame);
    } else {
        other(frame);
    }
}

/// Every entry but a system call.
#[cold]
#[inline(never)]
fn other(frame: &mut TrapFrame) {
    match frame.vector {
        v if v == TIMER_VECTOR as u64 => {
            time::TICKS.fetch_add(1, Ordering::Relaxed);
            apic::end_of_interrupt();
            crate::exec::on_tick(frame);
        }
        v if (u64::from(irq::LINE_VECTOR_BASE)..u64::from(irq::DEVICE_VECTOR_END)).contains(&v) => {
            if let Some(source) = irq::source_of(v as u8) {
                crate::exec::on_device_irq(frame, source);
            }
            irq::end_of_interrupt();
        }
        v if frame.is_from_user() => {
            let address = (v == 14).then(Cr2::read_raw);
            let fault = Fault {
                kind: FaultKind::from_x86_64(v as u8, frame.error_code),
                pc: frame.rip,
                address,
            };
            crate::exec::on_user_fault(frame, fault);
        }
        _ => kernel_fault(frame),
    }
}
