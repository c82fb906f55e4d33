//! The demo's entropy partition: reads random bytes from its entropy device (a virtio-rng
//! exported by the entropy server over the inter-partition VirtIO transport) as fast as it is
//! given them, and every `report-ms` prints how many bytes it got, at what rate, their mean
//! (127.5 expected) and how many of the 256 byte values it has seen. The server limits each
//! client to the rate in the description, so the rate printed is that rate at most.
//!
//! Configuration (`[partitions.NAME.config]`, declared in config-schema.toml): `channel`
//! (required), `chunk` (bytes asked per request, default 256), `report-ms` (default 1000),
//! `irq-mask`.
#![no_std]
#![no_main]

use entropy_client::{EntropyClient, EntropyError};
use rt::println;
use rt::syscall::{sleep_until, time_now_ns};
use virtio::dma::DmaRegion;

use iokit::KernelNotifier;

rt::entry!(main);

fn connect<'a>(
    region: DmaRegion<'a>,
    notifier: &KernelNotifier,
    channel: &str,
) -> EntropyClient<'a, KernelNotifier> {
    let mut reported = false;
    loop {
        match EntropyClient::attach(region, notifier.clone(), 20) {
            Ok(client) => return client,
            Err(e) => {
                if !reported {
                    println!("{channel}: waiting for the entropy server ({e:?})");
                    reported = true;
                }
                sleep_until(time_now_ns() + 100_000_000);
            }
        }
    }
}

fn main() {
    let mut text = [0u8; 1024];
    // The settings were checked against config-schema.toml and every default filled in when
    // the image was built: a missing one means a broken image (said, and we stop).
    let Some(config) = rt::config::load(&mut text) else {
        return;
    };
    let (Some(channel), Some(chunk), Some(report_ms)) = (
        config.need("channel"),
        config.need_u64("chunk"),
        config.need_u64("report-ms"),
    ) else {
        return;
    };
    // The schema bounds `chunk` to 1..=4096 and `report-ms` to at least 1.
    let chunk = chunk.clamp(1, 4096) as usize;
    let report_ns = report_ms.max(1) * 1_000_000;
    let Some((_, memory, notifier)) = iokit::client_attach(&config) else {
        return;
    };
    let mut rng = connect(memory, &notifier, channel);
    println!("{channel}: entropy device attached; reading {chunk} bytes per request");

    let mut buf = [0u8; 4096];
    let mut seen = [false; 256];
    let (mut total, mut sum, mut requests) = (0u64, 0u64, 0u64);
    let started = time_now_ns();
    let mut next_report = started + report_ns;
    loop {
        match rng.read(&mut buf[..chunk]) {
            Ok(n) => {
                requests += 1;
                total += n as u64;
                for &x in &buf[..n] {
                    sum += u64::from(x);
                    seen[usize::from(x)] = true;
                }
            }
            Err(EntropyError::Timeout) => {}
            Err(e @ (EntropyError::Reset | EntropyError::NeedsReset)) => {
                println!("{channel}: entropy server gone ({e:?}); reconnecting");
                rng = connect(memory, &notifier, channel);
            }
            Err(e) => {
                println!("{channel}: entropy error {e:?}");
                sleep_until(time_now_ns() + 100_000_000);
            }
        }
        let now = time_now_ns();
        if now >= next_report {
            next_report = now + report_ns;
            let ms = (now - started) / 1_000_000;
            let rate = total * 1000 / ms.max(1);
            let mean100 = sum * 100 / total.max(1);
            let distinct = seen.iter().filter(|&&s| s).count();
            println!(
                "{channel}: {total} bytes in {ms} ms ({rate} bytes/s, {requests} requests), mean {}.{:02}, {distinct}/256 byte values seen",
                mean100 / 100,
                mean100 % 100
            );
        }
    }
}
