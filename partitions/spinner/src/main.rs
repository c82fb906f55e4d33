//! Spins forever without a system call: only the timer can take the CPU back, and the kernel
//! must do so at the end of this partition's window.
#![no_std]
#![no_main]

rt::entry!(main);

fn main() {
    rt::println!("spinning");
    // No `spin_loop` hint: on x86_64 it is `pause`, on which QEMU's TCG leaves its translated
    // code, and the tests would spend their time emulating that.
    loop {
        core::hint::black_box(());
    }
}
