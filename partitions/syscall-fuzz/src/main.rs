//! Issues random system calls with random and adversarial arguments, as many as its
//! `calls` setting says (a million by default, see config-schema.toml; it reads no other input,
//! so runs are comparable). It never calls
//! `exit` or a long sleep; everything else is fair game.
#![no_std]
#![no_main]

use abi::Sysno;
use rt::println;
use rt::syscall::{raw_syscall5, time_now_ns};

rt::entry!(main);

/// Arguments worth trying beside random ones.
const INTERESTING: [usize; 12] = [
    0,
    1,
    8,
    4095,
    4096,
    0x40_0000,
    abi::USER_TOP as usize,
    0x7fff_ffff_ffff,
    0x8000_0000_0000,
    0xffff_8000_0000_0000,
    0xffff_ffff_8000_0000,
    usize::MAX,
];

fn main() {
    let mut text = [0u8; 256];
    // `calls` always arrives: the schema's default (one million) is filled in at build time.
    let Some(calls) = rt::config::read(&mut text)
        .ok()
        .and_then(|config| config.get_u64("calls"))
    else {
        println!("syscall-fuzz: setting calls missing from the image; stopping");
        return;
    };
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15 ^ time_now_ns();
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut errors = 0u64;
    for i in 0..calls {
        let r = next();
        let number = match r % 8 {
            0 => Sysno::Exit as usize + 1 + (r >> 8) as usize % 64, // unknown
            1 => Sysno::LogWrite as usize,
            2 => Sysno::Yield as usize,
            3 => Sysno::SleepUntil as usize,
            4 => Sysno::PartitionInfo as usize,
            // The IPC and device calls, none granted.
            5 => {
                Sysno::Call as usize
                    + (r >> 8) as usize % (abi::SYSCALL_COUNT - Sysno::Call as usize)
            }
            _ => (r >> 16) as usize, // anything at all
        };
        if number == Sysno::Exit as usize {
            continue;
        }
        let mut arg = |k: u64| {
            let v = next();
            if v % 3 == 0 {
                INTERESTING[(v >> 8) as usize % INTERESTING.len()]
            } else {
                (v >> (k * 7)) as usize
            }
        };
        let (mut a0, a1) = (arg(1), arg(2));
        if number == Sysno::SleepUntil as usize {
            a0 %= time_now_ns() as usize + 1; // never a sleep into the future
        }
        if number == Sysno::LogWrite as usize && (0x40_0000..0x7ff0_0000_0000).contains(&a0) {
            a0 |= 0xffff_0000_0000_0000; // keep the log readable: only invalid pointers
        }
        let args = [a0, a1, arg(3), arg(4), arg(5)];
        if abi::SysError::decode(raw_syscall5(number, args)).is_err() {
            errors += 1;
        }
        if (i + 1) % 250_000 == 0 {
            println!("{} calls, {errors} returned errors", i + 1);
        }
    }
    println!("done: {calls} calls, {errors} errors, the kernel is still here");
}
