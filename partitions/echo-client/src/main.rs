//! Calls the echo server 2000 times and checks every reply; halfway it asks the server to
//! crash and checks it is told so (PeerRestarted) and that calls work again after the restart.
//! It checks it cannot use a channel it was not granted, then notifies the watcher.
#![no_std]
#![no_main]

use abi::{ObjectKind, SysError};
use rt::println;
use rt::syscall::{call, lookup, notify, time_now_ns};

rt::entry!(main);

const CALLS: u32 = 2000;

fn main() {
    let echo = lookup(ObjectKind::Channel, "echo").expect("the echo channel is granted");
    assert_eq!(
        lookup(ObjectKind::Channel, "other"),
        Err(SysError::NotGranted)
    );
    assert_eq!(
        lookup(ObjectKind::Channel, "no-such-channel"),
        Err(SysError::BadArgument)
    );
    let done = lookup(ObjectKind::Notification, "done").expect("the done notification is granted");
    let mut message = [0u8; 32];
    let mut reply = [0u8; 32];
    let (mut ok, mut restarts) = (0u32, 0u32);
    let start = time_now_ns();
    for i in 0..CALLS {
        if i == CALLS / 2 {
            match call(echo, b"crash", &mut reply) {
                Err(SysError::PeerRestarted) => restarts += 1,
                other => println!("FAIL: asking the server to crash returned {other:?}"),
            }
        }
        let n = fmt_number(&mut message, i);
        match call(echo, &message[..n], &mut reply) {
            Ok(len) if len == n && (0..n).all(|k| reply[k] == message[n - 1 - k]) => ok += 1,
            Ok(len) => println!("FAIL: call {i}: wrong reply of {len} bytes"),
            Err(e) => println!("FAIL: call {i}: {e:?}"),
        }
    }
    let us = (time_now_ns() - start) / 1000;
    println!(
        "{ok} of {CALLS} calls answered correctly, {restarts} server restart seen, in {us} us"
    );
    notify(done).expect("notify");
}

/// Writes `msg-<i>` into `buf`; returns its length.
fn fmt_number(buf: &mut [u8; 32], i: u32) -> usize {
    let prefix = b"msg-";
    buf[..4].copy_from_slice(prefix);
    let mut digits = [0u8; 10];
    let mut n = 0;
    let mut v = i;
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for k in 0..n {
        buf[4 + k] = digits[n - 1 - k];
    }
    4 + n
}
