//! Spins forever without a system call: only the timer can take the CPU back, and the kernel
//! must do so at the end of this partition's window.
#![no_std]
#![no_main]

rt::entry!(main);

fn main() {
    rt::println!("spinning");
    loop {
        core::hint::spin_loop();
    }
}
