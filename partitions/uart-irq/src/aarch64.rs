//! The aarch64 body of the program (see main.rs): the PL061 GPIO controller of QEMU's virt
//! machine. Pin 0 is made an output with a level-high interrupt; driving it high raises the
//! interrupt at once, driving it low and clearing the latch lowers it (PL061 TRM, DDI 0190).

use abi::{ObjectKind, WindowKind};
use rt::println;
use rt::syscall::{device_info, irq_ack, lookup, poll, time_now_ns, wait};

/// PL061 registers (byte offsets).
const DATA_PIN0: usize = 0x004; // GPIODATA with address mask bit 0: pin 0 only
const DIR: usize = 0x400;
const IS: usize = 0x404;
const IEV: usize = 0x40c;
const IE: usize = 0x410;
const MIS: usize = 0x418;
const IC: usize = 0x41c;

const ROUNDS: u64 = 200;

struct Gpio(*mut u8);

impl Gpio {
    fn write(&self, reg: usize, value: u32) {
        // SAFETY: `reg` is a PL061 register inside the window the kernel mapped for this
        // partition (device memory); registers are 32-bit and word aligned.
        unsafe { core::ptr::write_volatile(self.0.add(reg) as *mut u32, value) }
    }
    fn read(&self, reg: usize) -> u32 {
        // SAFETY: as in `write`.
        unsafe { core::ptr::read_volatile(self.0.add(reg) as *const u32) }
    }
}

pub fn main() {
    let dev = lookup(ObjectKind::Device, "gpio").expect("gpio is granted");
    let info = device_info(dev).expect("device_info");
    let window = info
        .windows
        .iter()
        .find(|w| w.kind == WindowKind::Mmio)
        .expect("an MMIO window");
    println!(
        "gpio: registers at {:#x}, {} bytes, interrupt bits {:#x}",
        window.address, window.size, info.irq_bits
    );
    let gpio = Gpio(window.address as *mut u8);
    gpio.write(IE, 0);
    gpio.write(DATA_PIN0, 0);
    gpio.write(DIR, 1);
    gpio.write(IS, 1);
    gpio.write(IEV, 1);
    gpio.write(IC, 0xff);
    gpio.write(IE, 1);
    let _ = poll(info.irq_bits);
    let mut total_ns = 0;
    for round in 0..ROUNDS {
        let start = time_now_ns();
        gpio.write(DATA_PIN0, 1);
        let bits = wait(info.irq_bits).expect("wait");
        total_ns += time_now_ns() - start;
        let pending = gpio.read(MIS);
        gpio.write(DATA_PIN0, 0);
        gpio.write(IC, 1);
        if bits != info.irq_bits || pending & 1 == 0 {
            println!("FAIL: round {round}: bits {bits:#x}, masked status {pending:#x}");
            return;
        }
        irq_ack(dev, bits).expect("irq_ack");
    }
    println!(
        "bench: device interrupt to handler {} ns",
        total_ns / ROUNDS
    );
    println!("{ROUNDS} interrupts taken and acknowledged");
    let beyond = window.address + 0x1000;
    println!("reading past its window, at {beyond:#x}");
    // SAFETY: deliberately reading past the granted window: the fault is the expected outcome.
    let value = unsafe { core::ptr::read_volatile(beyond as *const u32) };
    println!("FAIL: memory past the window was readable ({value:#x})");
}
