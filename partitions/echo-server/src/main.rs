//! Answers every call with the message reversed. The message `crash` makes it fault, so a
//! test can restart a server in the middle of a client's calls.
#![no_std]
#![no_main]

use rt::println;
use rt::syscall::{recv, reply_recv};

rt::entry!(main);

fn main() {
    let generation = rt::syscall::partition_info()
        .map(|i| i.generation)
        .unwrap_or(0);
    println!("serving (generation {generation})");
    let mut buf = [0u8; 256];
    let mut answer = [0u8; 256];
    let mut served = 0u64;
    let mut call = recv(&mut buf).expect("recv");
    loop {
        let len = call.len as usize;
        if &buf[..len] == b"crash" {
            println!("asked to crash after {served} calls");
            // SAFETY: none; this write is meant to fault: the first page is never mapped.
            unsafe { core::ptr::write_volatile(0x100 as *mut u64, 1) };
        }
        for (i, b) in buf[..len].iter().enumerate() {
            answer[len - 1 - i] = *b;
        }
        served += 1;
        call = reply_recv(call.channel as usize, &answer[..len], &mut buf).expect("reply_recv");
    }
}
