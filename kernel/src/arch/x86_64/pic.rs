//! The legacy 8259 PICs: remapped away from the exception vectors and fully masked, because
//! the Local APIC (and later the I/O APIC) delivers every interrupt the kernel uses.

use x86_64::instructions::port::Port;

use super::idt::PIC_VECTOR_BASE;

/// Remaps both PICs to `PIC_VECTOR_BASE..+16` and masks every line.
pub fn disable() {
    let (mut cmd1, mut data1) = (Port::<u8>::new(0x20), Port::<u8>::new(0x21));
    let (mut cmd2, mut data2) = (Port::<u8>::new(0xa0), Port::<u8>::new(0xa1));
    // SAFETY: ports 0x20/0x21/0xa0/0xa1 are the two PICs, owned by the kernel. This is the
    // standard ICW1-ICW4 initialisation sequence followed by a full mask, which leaves them
    // unable to raise any interrupt.
    unsafe {
        cmd1.write(0x11); // ICW1: initialise, ICW4 follows
        cmd2.write(0x11);
        data1.write(PIC_VECTOR_BASE); // ICW2: vector base
        data2.write(PIC_VECTOR_BASE + 8);
        data1.write(4); // ICW3: secondary PIC on line 2
        data2.write(2);
        data1.write(1); // ICW4: 8086 mode
        data2.write(1);
        data1.write(0xff); // mask everything
        data2.write(0xff);
    }
}
