//! The IDT. Vectors a partition can raise (and the timer) enter through `trap`'s stubs, which
//! save every register; a fault in a partition goes to the health monitor, one in the kernel is
//! reported with vector, error code, registers and CR2, and stops the machine. NMI, double fault
//! and machine check run on IST stacks and always stop it; they are never a partition's doing.

use spin::Once;
use x86_64::structures::idt::{InterruptDescriptorTable, InterruptStackFrame};

use super::apic;
use super::gdt::{DOUBLE_FAULT_IST, NMI_IST};
use crate::arch::{ExitStatus, power_off};

/// Vector of the Local APIC timer.
pub const TIMER_VECTOR: u8 = 32;
/// Vector the Local APIC uses for spurious interrupts (low nibble must be all ones).
pub const SPURIOUS_VECTOR: u8 = 0xff;
/// Vectors the (masked) legacy PICs are remapped to, so stray IRQs never look like exceptions.
pub const PIC_VECTOR_BASE: u8 = 0x20 + 16;

static IDT: Once<InterruptDescriptorTable> = Once::new();

/// Reports an exception and stops the machine.
fn fatal(vector: u8, name: &str, error_code: Option<u64>, frame: &InterruptStackFrame) -> ! {
    let from_user = frame.code_segment.rpl() as u8 != 0;
    crate::klog::emergency(format_args!(
        "EXCEPTION: {name} (vector {vector}) in {} mode",
        if from_user { "user" } else { "kernel" }
    ));
    if let Some(code) = error_code {
        crate::klog::emergency(format_args!("  error code {code:#x}"));
    }
    crate::klog::emergency(format_args!(
        "  RIP={:#018x} CS={:#x} RFLAGS={:#x} RSP={:#018x} SS={:#x}",
        frame.instruction_pointer.as_u64(),
        frame.code_segment.0,
        frame.cpu_flags.bits(),
        frame.stack_pointer.as_u64(),
        frame.stack_segment.0
    ));
    crate::klog::emergency(format_args!("kernel fault: stopping the system"));
    power_off(ExitStatus::Failure)
}

macro_rules! report {
    ($fn_name:ident, $vector:expr, $name:expr) => {
        extern "x86-interrupt" fn $fn_name(frame: InterruptStackFrame) {
            fatal($vector, $name, None, &frame)
        }
    };
    ($fn_name:ident, $vector:expr, $name:expr, error_code) => {
        extern "x86-interrupt" fn $fn_name(frame: InterruptStackFrame, code: u64) {
            fatal($vector, $name, Some(code), &frame)
        }
    };
}

report!(nmi, 2, "non-maskable interrupt");
report!(hv_injection, 28, "hypervisor injection exception");
report!(
    vmm_communication,
    29,
    "VMM communication exception (#VC)",
    error_code
);
report!(security, 30, "security exception (#SX)", error_code);

extern "x86-interrupt" fn double_fault(frame: InterruptStackFrame, code: u64) -> ! {
    fatal(8, "double fault (#DF)", Some(code), &frame)
}

extern "x86-interrupt" fn machine_check(frame: InterruptStackFrame) -> ! {
    fatal(18, "machine check (#MC)", None, &frame)
}

extern "x86-interrupt" fn spurious(_frame: InterruptStackFrame) {
    // The Local APIC does not expect an EOI for a spurious interrupt (SDM Vol. 3A, 11.9).
}

extern "x86-interrupt" fn legacy_pic(_frame: InterruptStackFrame) {
    // The legacy PICs are masked; only their spurious IRQ 7/15 can arrive, which need no EOI
    // from a masked line. Ignore them.
}

extern "x86-interrupt" fn unexpected(frame: InterruptStackFrame) {
    crate::klog::emergency(format_args!(
        "unexpected interrupt at RIP={:#x}; ignored",
        frame.instruction_pointer.as_u64()
    ));
    apic::end_of_interrupt();
}

/// Builds and loads the IDT. Called once, early at boot, after the GDT.
pub fn init() {
    let idt = IDT.call_once(|| {
        let mut idt = InterruptDescriptorTable::new();
        // SAFETY: NMI_IST and DOUBLE_FAULT_IST are the TSS slots gdt::init fills with the tops
        // of two dedicated guarded stacks, used by no other vector.
        unsafe {
            idt.non_maskable_interrupt
                .set_handler_fn(nmi)
                .set_stack_index(NMI_IST);
            idt.double_fault
                .set_handler_fn(double_fault)
                .set_stack_index(DOUBLE_FAULT_IST);
        }
        idt.machine_check.set_handler_fn(machine_check);
        idt.hv_injection_exception.set_handler_fn(hv_injection);
        idt.vmm_communication_exception
            .set_handler_fn(vmm_communication);
        idt.security_exception.set_handler_fn(security);
        for vector in 32..=255u8 {
            idt[vector].set_handler_fn(unexpected);
        }
        for vector in PIC_VECTOR_BASE..PIC_VECTOR_BASE + 16 {
            idt[vector].set_handler_fn(legacy_pic);
        }
        idt[SPURIOUS_VECTOR].set_handler_fn(spurious);
        super::trap::install(&mut idt);
        idt
    });
    idt.load();
}
