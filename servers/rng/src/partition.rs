//! The partition: binds the portable entropy server (`rng_server`) to the kernel. It finds
//! its virtio-rng (a device granted by the description), its DMA region, and per client
//! channel a shared region and two notifications; then it serves in a loop, sleeping in `wait`
//! when idle, or until rate credit returns when a request waits for it.
//!
//! Server-wide keys (`[partitions.NAME.config]`): `device` (default `rng0`), `dma` (default
//! `queues`), `report-ms` (period of the per-client counters in the log, default 1000; 0:
//! never). Per channel: `rate`, `burst`. See docs/io-servers.md.

use rng_server::server::{ClientState, EntropySpec, MAX_CLIENTS, Server};
use rng_server::source::{BUFFER_LEN, BUFFERS, RING_BYTES, Source, VirtioRng};
use rt::config::Config;
use rt::println;
use rt::syscall::{irq_ack, partition_info, poll, sleep_until, time_now_ns, wait};

use iokit::{client_channel, open_device};

rt::entry!(main);

/// Ring area per client channel (one queue of up to 64 entries, split or packed).
const CLIENT_RING_LEN: usize = 0x4000;
/// How long to sleep between polls when the device's interrupt is not routed to us.
const POLL_NS: u64 = 1_000_000;

fn main() {
    let generation = partition_info().map_or(0, |i| i.generation);
    let mut text = [0u8; 4096];
    let config = rt::config::read(&mut text).unwrap_or_else(|e| {
        println!("no configuration ({e:?}): serving no clients");
        Config::new("")
    });
    let device_name = config.get("device").unwrap_or("rng0");
    let dma_name = config.get("dma").unwrap_or("queues");
    let report_ns = config.get_u64("report-ms").unwrap_or(1000) * 1_000_000;

    let Some((device, info)) = iokit::granted_device(device_name) else {
        return;
    };
    let Some(dma_region) = iokit::dma_region(dma_name) else {
        return;
    };
    let (Ok(ring), Ok(buffers)) = (
        dma_region.subregion(0, RING_BYTES),
        dma_region.subregion(RING_BYTES, BUFFERS * BUFFER_LEN),
    ) else {
        println!(
            "DMA region {dma_name} ({} bytes) is too small",
            dma_region.len()
        );
        return;
    };
    let (transport, route, kind) = match open_device(device, &info) {
        Ok(t) => t,
        Err(e) => {
            println!("{device_name}: no virtio-rng device ({e:?}); stopping");
            return;
        }
    };
    let mut routed = true;
    let source = VirtioRng::new(transport, ring, buffers, |_| {
        if let Some(mut r) = route {
            routed = r.route(0);
        }
        Ok(())
    });
    let source = match source {
        Ok(s) => s,
        Err(e) => {
            println!("{device_name}: initialisation failed ({e:?}); stopping");
            return;
        }
    };
    let interrupts = info.irq_bits != 0 && (routed || info.msix_vectors == 0);
    println!(
        "{device_name}: virtio-rng {kind}, pool of {BUFFERS} x {BUFFER_LEN} bytes, interrupts {} (generation {generation})",
        if interrupts { "on" } else { "off (polling)" },
    );

    let mut server = Server::new(source);
    let mut names: [&str; MAX_CLIENTS] = [""; MAX_CLIENTS];
    for channel in config.channels() {
        let spec = EntropySpec {
            rate: config.channel_u64(channel, "rate"),
            burst: config.channel_u64(channel, "burst"),
        };
        let Some((memory, notifier, _)) = client_channel(&config, channel) else {
            continue;
        };
        match server.add_client(memory, CLIENT_RING_LEN, spec, time_now_ns(), notifier) {
            Ok(index) => {
                names[index] = channel;
                match spec.rate {
                    Some(rate) => println!("{channel}: entropy at {rate} bytes/s"),
                    None => println!("{channel}: entropy, unlimited"),
                }
            }
            Err(e) => println!("{channel}: cannot lay out the channel: {e:?}"),
        }
    }

    let mut states = [None; MAX_CLIENTS];
    let mut reported = [0u64; MAX_CLIENTS];
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
        let now = time_now_ns();
        if report_ns > 0 && now >= next_report {
            next_report = now + report_ns;
            for (index, last) in reported.iter_mut().enumerate() {
                let Some(stats) = server.client_stats(index) else {
                    continue;
                };
                if stats.bytes != *last {
                    *last = stats.bytes;
                    println!(
                        "{}: {} bytes in {} requests ({} partial), throttled {} times",
                        names[index], stats.bytes, stats.requests, stats.partial, stats.throttled
                    );
                }
            }
        }
        let bits = if let Some(at) = progress.wake_at {
            // A request waits for rate credit: sleep until it returns (at most 20 ms), then
            // look at every bit.
            sleep_until(at.clamp(now + 100_000, now + 20_000_000));
            poll(u64::MAX).unwrap_or(0)
        } else if !interrupts {
            sleep_until(now + POLL_NS);
            poll(u64::MAX).unwrap_or(0)
        } else {
            wait(u64::MAX).unwrap_or(0)
        };
        if bits & info.irq_bits != 0 {
            server.source().ack_interrupt();
            let _ = irq_ack(device, bits & info.irq_bits);
        }
    }
}
