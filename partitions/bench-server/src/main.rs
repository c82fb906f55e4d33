//! The far end of bench-client's round trips: answers calls with the bytes it got until told
//! `notify`, then answers each `ping` notification with a `pong`.
#![no_std]
#![no_main]

use abi::ObjectKind;
use rt::syscall::{lookup, notify, recv, reply, reply_recv, wait};

rt::entry!(main);

fn main() {
    let pong = lookup(ObjectKind::Notification, "pong").expect("pong notification");
    let mut buf = [0u8; 64];
    let mut call = recv(&mut buf).expect("recv");
    loop {
        let len = call.len as usize;
        if &buf[..len] == b"notify" {
            reply(call.channel as usize, &[]).expect("reply");
            break;
        }
        let answer = buf;
        call = reply_recv(call.channel as usize, &answer[..len], &mut buf).expect("reply_recv");
    }
    loop {
        wait(1).expect("wait");
        notify(pong).expect("notify");
    }
}
