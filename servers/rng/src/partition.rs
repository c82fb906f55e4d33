//! The partition: the entropy class on the framework's server partition (`iokit::serve`). Its
//! device is a granted virtio-rng (`device`, default `rng0`) with its rings and pool in the
//! DMA region (`dma`, default `queues`); each channel's `rate` and `burst` are its share. See
//! docs/io-servers.md.

use iokit::DeviceTransport;
use iokit::serve::{Opening, ServerProgram, run};
use rng_server::server::Entropy;
use rng_server::source::{BUFFER_LEN, BUFFERS, RING_BYTES, VirtioRng};
use rt::println;

rt::entry!(main);

const PROGRAM: ServerProgram = ServerProgram {
    device_key: "device",
    // One queue of up to 64 entries, split or packed.
    client_ring_len: 0x4000,
    poll_period_ns: 1_000_000,
};

fn main() {
    run(PROGRAM, open, |_, _| {});
}

/// Brings up the virtio-rng with its pool; logs what it is.
fn open(o: &mut Opening<'_>) -> Option<Entropy<VirtioRng<'static, DeviceTransport>>> {
    let (Ok(ring), Ok(buffers)) = (
        o.dma.subregion(0, RING_BYTES),
        o.dma.subregion(RING_BYTES, BUFFERS * BUFFER_LEN),
    ) else {
        println!("DMA region ({} bytes) is too small", o.dma.len());
        return None;
    };
    let transport = o.take_transport()?;
    let source = VirtioRng::new(transport, ring, buffers, |_| {
        o.route(0);
        Ok(())
    });
    let source = source
        .inspect_err(|e| println!("{}: initialisation failed ({e:?}); stopping", o.name))
        .ok()?;
    println!(
        "{}: virtio-rng {}, pool of {BUFFERS} x {BUFFER_LEN} bytes, interrupts {} (generation {})",
        o.name,
        o.kind,
        o.interrupts_word(),
        o.generation
    );
    Some(Entropy::new(source))
}
