//! The partition: the network class on the framework's server partition (`iokit::serve`). Its
//! NIC is a granted virtio-net device (`nic`, default `net0`) with its rings and packet
//! buffers in the DMA region (`dma`, default `packets`); each channel's `mac` is its client's
//! address (required). `queue-depth` is the largest client queue (default 64); `poll = true`
//! polls the NIC every 200 us instead of waiting for its interrupt. See docs/io-servers.md.

use iokit::DeviceTransport;
use iokit::serve::{Opening, ServerProgram, run};
use net_server::server::Network;
use net_server::switch::MacDisplay;
use net_server::uplink::{Uplink, VirtioUplink};
use rt::println;

rt::entry!(main);

const PROGRAM: ServerProgram = ServerProgram {
    device_key: "nic",
    // Two split or packed queues of up to 256 entries, as much ring memory as the NIC's.
    client_ring_len: 2 * DEVICE_RING_LEN,
    // Without the NIC's interrupt, it is polled every 200 us.
    poll_period_ns: 200_000,
};
/// Ring memory per queue of the real NIC (legacy layout of 256 entries: 10.3 KiB).
const DEVICE_RING_LEN: usize = 0x4000;
/// Entries of the real NIC's queues (QEMU's virtio-net default; a legacy device's queue size
/// is fixed by the device).
const DEVICE_QUEUE: usize = 256;

type Nic = VirtioUplink<'static, DeviceTransport, DEVICE_QUEUE>;

fn main() {
    run(PROGRAM, open, |_, _| {});
}

/// Brings up the NIC with its packet buffers; logs what it is.
fn open(o: &mut Opening<'_>) -> Option<Network<Nic>> {
    let rings = 2 * DEVICE_RING_LEN;
    let (Ok(rx_ring), Ok(tx_ring), Ok(memory)) = (
        o.dma.subregion(0, DEVICE_RING_LEN),
        o.dma.subregion(DEVICE_RING_LEN, DEVICE_RING_LEN),
        o.dma.subregion(rings, o.dma.len().saturating_sub(rings)),
    ) else {
        println!("DMA region ({} bytes) is too small", o.dma.len());
        return None;
    };
    let transport = o.take_transport()?;
    // Only the receive queue interrupts: transmit buffers are reaped on every pass.
    let uplink = VirtioUplink::new(transport, rx_ring, tx_ring, memory, |_| {
        o.route(0);
        Ok(())
    });
    let mut uplink: Nic = uplink
        .inspect_err(|e| println!("{}: initialisation failed ({e:?}); stopping", o.name))
        .ok()?;
    println!(
        "{}: virtio-net {}, MAC {}, link {}, {} packet buffers each way, interrupts {} (generation {})",
        o.name,
        o.kind,
        MacDisplay(uplink.mac()),
        if uplink.link_up() { "up" } else { "down" },
        uplink.buffers(),
        o.interrupts_word(),
        o.generation
    );
    // 1..=256 by the schema.
    let queue_depth = o.number("queue-depth")? as u16;
    Some(Network::new(uplink, queue_depth))
}
