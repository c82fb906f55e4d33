//! The x86_64 body of the program (see main.rs).

use abi::{ObjectKind, WindowKind};
use rt::port::PortWindow;
use rt::println;
use rt::syscall::{device_info, irq_ack, lookup, poll, time_now_ns, wait};

/// 16550 registers (offsets from the base port).
const IER: usize = 1;
const IIR: usize = 2;
const IER_THR_EMPTY: u8 = 0x02;
/// IIR: no interrupt pending.
const IIR_NONE: u8 = 0x01;

const ROUNDS: u64 = 200;

pub fn main() {
    let dev = lookup(ObjectKind::Device, "com2").expect("com2 is granted");
    let info = device_info(dev).expect("device_info");
    let ports = info
        .windows
        .iter()
        .find(|w| w.kind == WindowKind::IoPorts)
        .expect("an I/O port window");
    // SAFETY: the kernel reported these ports as com2's, granted to this partition.
    let uart = unsafe { PortWindow::new(ports.port, ports.size as u16) }.expect("window");
    println!(
        "com2: ports {:#x}+{}, interrupt bits {:#x}",
        ports.port, ports.size, info.irq_bits
    );
    uart.write_u8(IER, 0);
    let _ = uart.read_u8(IIR);
    let _ = poll(info.irq_bits);
    let mut total_ns = 0;
    for round in 0..ROUNDS {
        let start = time_now_ns();
        uart.write_u8(IER, IER_THR_EMPTY);
        let bits = wait(info.irq_bits).expect("wait");
        total_ns += time_now_ns() - start;
        let iir = uart.read_u8(IIR);
        uart.write_u8(IER, 0);
        if bits != info.irq_bits || iir & IIR_NONE != 0 {
            println!("FAIL: round {round}: bits {bits:#x}, IIR {iir:#x}");
            return;
        }
        irq_ack(dev, bits).expect("irq_ack");
    }
    println!(
        "bench: device interrupt to handler {} ns",
        total_ns / ROUNDS
    );
    println!("{ROUNDS} interrupts taken and acknowledged");
    println!("reading COM1, which is the kernel's");
    // SAFETY: deliberately using a port the kernel did not grant: the #GP is the expected
    // outcome.
    let value = unsafe { rt::port::inb(0x3f8) };
    println!("FAIL: COM1 was readable ({value:#x})");
}
