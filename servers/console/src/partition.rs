//! The partition: the console class on the framework's server partition (`iokit::serve`). Its
//! device is a granted virtio-console (`device`, default `console0`) with its rings and
//! buffers in the DMA region (`dma`, default `queues`); each channel's `port` (required),
//! `rate` and `burst` are its console. `report-ms`: period of the per-client counters in the
//! log (default 1000; 0: never). See docs/io-servers.md.

use console_server::backend::{MAX_PORTS, Ports, VirtioPorts, buffer_bytes, ring_bytes};
use console_server::server::{ConsoleSpec, Consoles, MAX_CLIENTS};
use iokit::DeviceTransport;
use iokit::serve::{Opening, ServerProgram, run};
use ioserver::Kernel;
use rt::println;

rt::entry!(main);

const PROGRAM: ServerProgram = ServerProgram {
    device_key: "device",
    // Two queues of up to 64 entries, split or packed: 8 KiB of ring each.
    client_ring_len: 2 * 0x2000,
    poll_period_ns: 1_000_000,
};

/// Highest port number a description may name (QEMU's virtio-serial has at most 31 ports).
const MAX_PORT_NUMBER: u32 = 31;

fn main() {
    // Whether each client's port has its host side open, as last logged.
    let mut host_open = [false; MAX_CLIENTS];
    run(PROGRAM, open, move |server, kernel| {
        let ports = server.class_ref().ports_ref();
        for (index, channel) in server.clients().iter() {
            let port = channel.class.port();
            let open = ports.port_status(port).is_some_and(|s| s.host_open);
            if open != host_open[index] {
                host_open[index] = open;
                let word = if open { "connected" } else { "disconnected" };
                kernel.log(format_args!("port {port}: host side {word}"));
            }
        }
    });
}

/// Brings up the virtio-console with the ports the channels name (checked before the device
/// is touched; the channels themselves are refused later, when they are attached); logs what
/// it is.
fn open(o: &mut Opening<'_>) -> Option<Consoles<VirtioPorts<'static, DeviceTransport>>> {
    let mut ports = [0u32; MAX_PORTS];
    let mut count = 0;
    for channel in o.config.channels() {
        let port = o.config.channel_u64(channel, "port");
        let spec = ConsoleSpec::from_config(port, None, None, MAX_PORT_NUMBER + 1, &ports[..count]);
        if let (Ok(spec), true) = (spec, count < MAX_PORTS) {
            ports[count] = spec.port;
            count += 1;
        }
    }
    let ports = &ports[..count];
    let (Ok(rings), Ok(buffers)) = (
        o.dma.subregion(0, ring_bytes(count)),
        o.dma.subregion(ring_bytes(count), buffer_bytes(count)),
    ) else {
        println!(
            "DMA region {} ({} bytes) is too small for {count} ports",
            o.dma_name,
            o.dma.len()
        );
        return None;
    };
    let transport = o.take_transport()?;
    let backend = VirtioPorts::new(transport, rings, buffers, ports, |_, queue| {
        o.route(queue);
        Ok(())
    });
    let backend = backend
        .inspect_err(|e| {
            println!(
                "{}: initialisation failed ({e:?}): are ports {ports:?} on the device?; stopping",
                o.name
            )
        })
        .ok()?;
    println!(
        "{}: virtio-console {}, multiport {}, {} ports, interrupts {} (generation {})",
        o.name,
        o.kind,
        if backend.multiport() { "yes" } else { "no" },
        backend.max_ports(),
        o.interrupts_word(),
        o.generation
    );
    Some(Consoles::new(backend))
}
