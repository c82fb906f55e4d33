//! The partition: binds the portable console server (`console_server`) to the kernel. It
//! finds its virtio-console (a device granted by the description), its DMA region, and per
//! client channel a shared region and two notifications; then it serves in a loop, sleeping in
//! `wait` when idle, or until rate credit returns when a client's output waits for it.
//!
//! Server-wide keys (`[partitions.NAME.config]`): `device` (default `console0`), `dma`
//! (default `queues`), `report-ms` (period of the per-client counters in the log, default
//! 1000; 0: never). Per channel: `port` (required), `rate`, `burst`. See docs/io-servers.md.

use console_server::backend::{MAX_PORTS, Ports, VirtioPorts, buffer_bytes, ring_bytes};
use console_server::server::{ClientState, ConsoleSpec, MAX_CLIENTS, Server};
use rt::config::Config;
use rt::println;
use rt::syscall::{irq_ack, partition_info, poll, sleep_until, time_now_ns, wait};

use iokit::{client_channel, open_device};

rt::entry!(main);

/// Ring area per client channel (two queues of up to 64 entries, split or packed).
const CLIENT_RING_LEN: usize = 0x4000;
/// Highest port number a description may name (QEMU's virtio-serial has at most 31 ports).
const MAX_PORT_NUMBER: u32 = 31;
/// How long to sleep between polls when the device's interrupt is not routed to us.
const POLL_NS: u64 = 1_000_000;

fn main() {
    let generation = partition_info().map_or(0, |i| i.generation);
    let mut text = [0u8; 4096];
    let config = rt::config::read(&mut text).unwrap_or_else(|e| {
        println!("no configuration ({e:?}): serving no clients");
        Config::new("")
    });
    let device_name = config.get("device").unwrap_or("console0");
    let dma_name = config.get("dma").unwrap_or("queues");
    let report_ns = config.get_u64("report-ms").unwrap_or(1000) * 1_000_000;

    // Which port each channel has, checked before the device is touched.
    let mut specs: [Option<(&str, ConsoleSpec)>; MAX_CLIENTS] = [None; MAX_CLIENTS];
    let mut ports = [0u32; MAX_PORTS];
    let mut count = 0;
    for channel in config.channels() {
        if count == MAX_CLIENTS.min(MAX_PORTS) {
            println!("{channel}: not served: at most {count} clients");
            continue;
        }
        match ConsoleSpec::from_config(
            config.channel_u64(channel, "port"),
            config.channel_u64(channel, "rate"),
            config.channel_u64(channel, "burst"),
            MAX_PORT_NUMBER + 1,
            &ports[..count],
        ) {
            Ok(spec) => {
                specs[count] = Some((channel, spec));
                ports[count] = spec.port;
                count += 1;
            }
            Err(e) => println!("{channel}: not served: {e:?}"),
        }
    }

    let Some((device, info)) = iokit::granted_device(device_name) else {
        return;
    };
    let Some(dma_region) = iokit::dma_region(dma_name) else {
        return;
    };
    let (Ok(rings), Ok(buffers)) = (
        dma_region.subregion(0, ring_bytes(count)),
        dma_region.subregion(ring_bytes(count), buffer_bytes(count)),
    ) else {
        println!(
            "DMA region {dma_name} ({} bytes) is too small for {count} ports",
            dma_region.len()
        );
        return;
    };
    let (transport, route, kind) = match open_device(device, &info) {
        Ok(t) => t,
        Err(e) => {
            println!("{device_name}: no virtio-console device ({e:?}); stopping");
            return;
        }
    };
    let mut route = route;
    let mut routed = true;
    let backend = VirtioPorts::new(transport, rings, buffers, &ports[..count], |_, queue| {
        if let Some(r) = route.as_mut() {
            routed &= r.route(queue);
        }
        Ok(())
    });
    let backend = match backend {
        Ok(b) => b,
        Err(e) => {
            println!(
                "{device_name}: initialisation failed ({e:?}): are ports {:?} on the device?; stopping",
                &ports[..count]
            );
            return;
        }
    };
    let interrupts = info.irq_bits != 0 && (routed || info.msix_vectors == 0);
    println!(
        "{device_name}: virtio-console {kind}, multiport {}, {} ports, interrupts {} (generation {generation})",
        if backend.multiport() { "yes" } else { "no" },
        backend.max_ports(),
        if interrupts { "on" } else { "off (polling)" },
    );

    let mut server = Server::new(backend);
    let mut names: [&str; MAX_CLIENTS] = [""; MAX_CLIENTS];
    for (channel, spec) in specs.iter().flatten() {
        let Some((memory, notifier, _)) = client_channel(&config, channel) else {
            continue;
        };
        match server.add_client(memory, CLIENT_RING_LEN, *spec, time_now_ns(), notifier) {
            Ok(index) => {
                names[index] = channel;
                match spec.rate {
                    Some(rate) => println!(
                        "{channel}: console on port {}, output limited to {rate} bytes/s",
                        spec.port
                    ),
                    None => println!("{channel}: console on port {}, unlimited", spec.port),
                }
            }
            Err(e) => println!("{channel}: cannot lay out the channel: {e:?}"),
        }
    }

    let mut states = [None; MAX_CLIENTS];
    let mut reported = [(0u64, 0u64); MAX_CLIENTS];
    let mut host_open = [false; MAX_PORTS];
    let mut next_report = time_now_ns() + report_ns;
    loop {
        let mut progress = server.run_once(time_now_ns());
        while progress.busy {
            let wake = progress.wake_at;
            progress = server.run_once(time_now_ns());
            progress.wake_at = match (wake, progress.wake_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        for (index, last) in states.iter_mut().enumerate() {
            let now = server.client_state(index);
            if now != *last {
                if let Some(state) = now {
                    match state {
                        ClientState::Serving => println!("{}: serving", names[index]),
                        ClientState::Idle => println!("{}: reset by the client", names[index]),
                        ClientState::Broken(why) => {
                            println!("{}: stopped until it resets: {why:?}", names[index])
                        }
                    }
                }
                *last = now;
            }
        }
        for (i, &port) in ports[..count].iter().enumerate() {
            let open = server
                .ports()
                .port_status(port)
                .is_some_and(|s| s.host_open);
            if open != host_open[i] {
                host_open[i] = open;
                println!(
                    "port {port}: host side {}",
                    if open { "connected" } else { "disconnected" }
                );
            }
        }
        let now = time_now_ns();
        if report_ns > 0 && now >= next_report {
            next_report = now + report_ns;
            for (index, last) in reported.iter_mut().enumerate() {
                let Some(stats) = server.client_stats(index) else {
                    continue;
                };
                if (stats.bytes_out, stats.bytes_in) != *last {
                    *last = (stats.bytes_out, stats.bytes_in);
                    println!(
                        "{}: {} bytes out, {} bytes in, throttled {} times",
                        names[index], stats.bytes_out, stats.bytes_in, stats.throttled
                    );
                }
            }
        }
        // Counters are reported when the loop runs anyway (they only change then).
        let bits = if let Some(at) = progress.wake_at {
            // Output waits for rate credit: sleep until it returns (at most 20 ms, so other
            // clients' kicks are not left waiting long), then look at every bit.
            sleep_until(at.clamp(now + 100_000, now + 20_000_000));
            poll(u64::MAX).unwrap_or(0)
        } else if !interrupts {
            sleep_until(now + POLL_NS);
            poll(u64::MAX).unwrap_or(0)
        } else {
            // Every bit: client kicks and the device's interrupts.
            wait(u64::MAX).unwrap_or(0)
        };
        if bits & info.irq_bits != 0 {
            server.ports().ack_interrupt();
            let _ = irq_ack(device, bits & info.irq_bits);
        }
    }
}
