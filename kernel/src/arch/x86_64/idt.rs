//! The IDT: every CPU exception is reported with its vector, error code, RIP and, for page
//! faults, CR2; then the machine stops. (Faults of partitions will go to the health monitor
//! instead; a fault in the kernel is always a kernel bug.)

use core::sync::atomic::Ordering;

use spin::Once;
use x86_64::registers::control::Cr2;
use x86_64::structures::idt::{InterruptDescriptorTable, InterruptStackFrame, PageFaultErrorCode};

use super::gdt::{DOUBLE_FAULT_IST, NMI_IST};
use super::{apic, time};
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

report!(divide_error, 0, "divide error (#DE)");
report!(debug, 1, "debug (#DB)");
report!(nmi, 2, "non-maskable interrupt");
report!(breakpoint, 3, "breakpoint (#BP)");
report!(overflow, 4, "overflow (#OF)");
report!(bound_range, 5, "bound range exceeded (#BR)");
report!(invalid_opcode, 6, "invalid opcode (#UD)");
report!(device_not_available, 7, "device not available (#NM)");
report!(invalid_tss, 10, "invalid TSS (#TS)", error_code);
report!(
    segment_not_present,
    11,
    "segment not present (#NP)",
    error_code
);
report!(stack_segment, 12, "stack-segment fault (#SS)", error_code);
report!(
    general_protection,
    13,
    "general protection fault (#GP)",
    error_code
);
report!(x87_floating_point, 16, "x87 floating-point exception (#MF)");
report!(alignment_check, 17, "alignment check (#AC)", error_code);
report!(
    simd_floating_point,
    19,
    "SIMD floating-point exception (#XM)"
);
report!(virtualization, 20, "virtualization exception (#VE)");
report!(
    control_protection,
    21,
    "control protection exception (#CP)",
    error_code
);
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

extern "x86-interrupt" fn page_fault(frame: InterruptStackFrame, code: PageFaultErrorCode) {
    let address = Cr2::read_raw();
    let access = if code.contains(PageFaultErrorCode::INSTRUCTION_FETCH) {
        "instruction fetch"
    } else if code.contains(PageFaultErrorCode::CAUSED_BY_WRITE) {
        "write"
    } else {
        "read"
    };
    let cause = if code.contains(PageFaultErrorCode::PROTECTION_VIOLATION) {
        "protection violation"
    } else {
        "page not present"
    };
    crate::klog::emergency(format_args!(
        "page fault: {access} at address CR2={address:#018x} ({cause})"
    ));
    fatal(14, "page fault (#PF)", Some(code.bits()), &frame)
}

extern "x86-interrupt" fn timer(_frame: InterruptStackFrame) {
    time::TICKS.fetch_add(1, Ordering::Relaxed);
    apic::end_of_interrupt();
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
        idt.divide_error.set_handler_fn(divide_error);
        idt.debug.set_handler_fn(debug);
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
        idt.breakpoint.set_handler_fn(breakpoint);
        idt.overflow.set_handler_fn(overflow);
        idt.bound_range_exceeded.set_handler_fn(bound_range);
        idt.invalid_opcode.set_handler_fn(invalid_opcode);
        idt.device_not_available
            .set_handler_fn(device_not_available);
        idt.invalid_tss.set_handler_fn(invalid_tss);
        idt.segment_not_present.set_handler_fn(segment_not_present);
        idt.stack_segment_fault.set_handler_fn(stack_segment);
        idt.general_protection_fault
            .set_handler_fn(general_protection);
        idt.page_fault.set_handler_fn(page_fault);
        idt.x87_floating_point.set_handler_fn(x87_floating_point);
        idt.alignment_check.set_handler_fn(alignment_check);
        idt.machine_check.set_handler_fn(machine_check);
        idt.simd_floating_point.set_handler_fn(simd_floating_point);
        idt.virtualization.set_handler_fn(virtualization);
        idt.cp_protection_exception
            .set_handler_fn(control_protection);
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
        idt[TIMER_VECTOR].set_handler_fn(timer);
        idt[SPURIOUS_VECTOR].set_handler_fn(spurious);
        idt
    });
    idt.load();
}
