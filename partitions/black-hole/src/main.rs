//! Receives a call and never replies: its client must stay blocked, and nobody else may notice.
#![no_std]
#![no_main]

rt::entry!(main);

fn main() {
    let mut buf = [0u8; 64];
    let call = rt::syscall::recv(&mut buf).expect("recv");
    rt::println!(
        "received {} bytes on channel {}; never replying",
        call.len,
        call.channel
    );
    loop {
        rt::syscall::yield_now();
    }
}
