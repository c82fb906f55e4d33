//! The partition: binds the portable server (`net_server`) to the kernel. It finds its NIC
//! (a device granted by the description), its DMA region, and per client channel a shared
//! region, two notifications and the client's MAC; then it switches frames in a loop,
//! sleeping in `wait` when idle.
//!
//! Names, per channel `C` the server serves (overridable with `channels.C.region`,
//! `channels.C.kick`, `channels.C.irq`): shared region `C`, notification `C-kick` (client →
//! server) and `C-irq` (server → client); `channels.C.mac` is the client's MAC (required).
//! Server-wide keys: `nic` (device name, default `net0`), `dma` (DMA region name, default
//! `packets`), `queue-depth` (largest client queue, default 64), `poll` (true: poll the NIC every
//! 200 us instead of waiting for its interrupt). See docs/io-servers.md.

use iokit::{client_channel, open_device};
use net_server::server::{ClientState, Server};
use net_server::switch::{MAX_CLIENTS, MacDisplay, parse_mac};
use net_server::uplink::{Uplink, VirtioUplink};
use rt::config::Config;
use rt::println;
use rt::syscall::{irq_ack, partition_info, poll, sleep_until, time_now_ns, wait};

rt::entry!(main);

/// Ring area per client channel: two split or packed queues of up to 256 entries.
const CLIENT_RING_LEN: usize = 0x8000;
/// Ring memory per queue of the real NIC (legacy layout of 256 entries: 10.3 KiB).
const DEVICE_RING_LEN: usize = 0x4000;
/// Entries of the real NIC's queues (QEMU's virtio-net default; a legacy device's queue size
/// is fixed by the device).
const DEVICE_QUEUE: usize = 256;
/// How long to sleep between polls of the NIC when its interrupt is not routed to us.
const POLL_NS: u64 = 200_000;
/// Statistics are printed at most this often.
const REPORT_NS: u64 = 5_000_000_000;

fn main() {
    let generation = partition_info().map_or(0, |i| i.generation);
    let mut text = [0u8; 4096];
    let config = rt::config::read(&mut text).unwrap_or_else(|e| {
        println!("no configuration ({e:?}): serving no clients");
        Config::new("")
    });
    let nic_name = config.get("nic").unwrap_or("net0");
    let dma_name = config.get("dma").unwrap_or("packets");
    let queue_depth = config.get_u64("queue-depth").unwrap_or(64).clamp(1, 256) as u16;

    let Some((device, info)) = iokit::granted_device(nic_name) else {
        return;
    };
    let Some(dma_region) = iokit::dma_region(dma_name) else {
        return;
    };
    let rings = 2 * DEVICE_RING_LEN;
    let (Ok(rx_ring), Ok(tx_ring), Ok(memory)) = (
        dma_region.subregion(0, DEVICE_RING_LEN),
        dma_region.subregion(DEVICE_RING_LEN, DEVICE_RING_LEN),
        dma_region.subregion(rings, dma_region.len().saturating_sub(rings)),
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
            println!("{nic_name}: no virtio-net device ({e:?}); stopping");
            return;
        }
    };
    let mut routed = false;
    let uplink = VirtioUplink::<_, DEVICE_QUEUE>::new(transport, rx_ring, tx_ring, memory, |_| {
        // Only the receive queue interrupts: transmit buffers are reaped on every pass.
        if let Some(mut r) = route {
            routed = r.route(0);
        }
        Ok(())
    });
    let mut uplink = match uplink {
        Ok(u) => u,
        Err(e) => {
            println!("{nic_name}: initialisation failed ({e:?}); stopping");
            return;
        }
    };
    let interrupts = info.irq_bits != 0
        && (routed || info.msix_vectors == 0)
        && config.get_bool("poll") != Some(true);
    println!(
        "{nic_name}: virtio-net {kind}, MAC {}, link {}, {} packet buffers each way, interrupts {} (generation {generation})",
        MacDisplay(uplink.mac()),
        if uplink.link_up() { "up" } else { "down" },
        uplink.buffers(),
        if interrupts { "on" } else { "off (polling)" },
    );

    let mut server = Server::new(uplink);
    let mut names: [&str; MAX_CLIENTS] = [""; MAX_CLIENTS];
    for channel in config.channels() {
        let Some(mac) = config.channel_get(channel, "mac").and_then(parse_mac) else {
            println!("{channel}: no valid `mac`; not served");
            continue;
        };
        let Some((memory, notifier, _)) = client_channel(&config, channel) else {
            continue;
        };
        match server.add_client(memory, CLIENT_RING_LEN, mac, queue_depth, notifier) {
            Ok(index) => {
                names[index] = channel;
                println!("{channel}: virtual NIC with MAC {}", MacDisplay(mac));
            }
            Err(e) => println!("{channel}: not served: {e:?}"),
        }
    }

    let mut states = [None; MAX_CLIENTS];
    let mut last_report = time_now_ns();
    let mut reported = [Default::default(); MAX_CLIENTS];
    loop {
        while server.run_once().busy {}
        for (index, last) in states.iter_mut().enumerate() {
            let now = server.client_state(index);
            if now != *last {
                if let (Some(state), Some(_)) = (now, *last) {
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
        if time_now_ns() - last_report > REPORT_NS {
            last_report = time_now_ns();
            for (index, last) in reported.iter_mut().enumerate() {
                let Some(stats) = server.client_stats(index) else {
                    continue;
                };
                if stats != *last {
                    println!(
                        "{}: tx {} frames {} bytes, rx {} frames {} bytes, dropped: spoofed {} malformed {} no-buffer {}",
                        names[index],
                        stats.tx_frames,
                        stats.tx_bytes,
                        stats.rx_frames,
                        stats.rx_bytes,
                        stats.spoofed,
                        stats.malformed,
                        stats.rx_no_buffer
                    );
                    *last = stats;
                }
            }
        }
        let bits = if !interrupts {
            sleep_until(time_now_ns() + POLL_NS);
            poll(u64::MAX).unwrap_or(0)
        } else {
            // Ask the NIC for an interrupt on the next frame; every bit wakes us: client kicks
            // and the NIC's interrupts alike.
            if server.uplink().enable_interrupts() {
                continue;
            }
            match wait(u64::MAX) {
                Ok(bits) => bits,
                Err(_) => {
                    sleep_until(time_now_ns() + POLL_NS);
                    0
                }
            }
        };
        if bits & info.irq_bits != 0 {
            server.uplink().ack_interrupt();
            let _ = irq_ack(device, bits & info.irq_bits);
        }
    }
}
