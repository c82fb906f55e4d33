//! The 8254 PIT, used once at boot as the reference clock of known frequency against which
//! the TSC and the Local APIC timer are calibrated.

use x86_64::instructions::port::Port;

/// The PIT's input clock, fixed by the PC architecture.
pub const PIT_HZ: u64 = 1_193_182;

/// Runs `start` (which samples the counters to calibrate), waits `pit_ticks` PIT ticks using
/// channel 2 in one-shot mode, and runs `stop`. Interrupts should be masked meanwhile.
pub fn measure(pit_ticks: u16, start: impl FnOnce(), stop: impl FnOnce()) {
    let mut gate = Port::<u8>::new(0x61);
    let mut command = Port::<u8>::new(0x43);
    let mut channel2 = Port::<u8>::new(0x42);
    // SAFETY: ports 0x42, 0x43 and 0x61 are PIT channel 2, the PIT mode register and the
    // gate/speaker control, all owned by the kernel. Channel 2 drives only the (disabled)
    // speaker, so reprogramming it has no effect beyond this measurement.
    unsafe {
        let g = gate.read();
        gate.write((g & !0x02) | 0x01); // gate on, speaker off
        command.write(0b1011_0000); // channel 2, lobyte/hibyte, mode 0, binary
        channel2.write(pit_ticks as u8);
        channel2.write((pit_ticks >> 8) as u8);
        // Restart the count: the gate's rising edge loads the counter in mode 0.
        let g = gate.read() & !0x01;
        gate.write(g);
        gate.write(g | 0x01);
        start();
        // Bit 5 of port 0x61 mirrors channel 2's output, which goes high when the count ends.
        while gate.read() & 0x20 == 0 {
            core::hint::spin_loop();
        }
        stop();
    }
}
