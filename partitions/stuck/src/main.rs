//! Calls a server that never replies.
#![no_std]
#![no_main]

use abi::ObjectKind;

rt::entry!(main);

fn main() {
    let void =
        rt::syscall::lookup(ObjectKind::Channel, "void").expect("the void channel is granted");
    rt::println!("calling a server that never replies");
    let mut reply = [0u8; 8];
    let result = rt::syscall::call(void, b"hello?", &mut reply);
    rt::println!("FAIL: the call returned {result:?}");
}
