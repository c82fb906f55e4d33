//! The demo's entropy partition: reads random bytes from its entropy device (a virtio-rng
//! exported by the entropy server over the inter-partition VirtIO transport) as fast as it is
//! given them, and every `report-ms` prints how many bytes it got, at what rate, their mean
//! (127.5 expected) and how many of the 256 byte values it has seen. The server limits each
//! client to the rate in the description, so the rate printed is that rate at most.
//!
//! Configuration (`[partitions.NAME.config]`, all optional): `channel` (default `entropy`),
//! `chunk` (bytes asked per request, default 256), `report-ms` (default 1000), `irq-mask`.
#![no_std]
#![no_main]

use abi::ObjectKind;
use entropy_client::{EntropyClient, EntropyError};
use rt::println;
use rt::syscall::{lookup, notify, poll, region_info, sleep_until, time_now_ns};
use virtio::dma::DmaRegion;
use virtio::transport::shmem::Notifier;

rt::entry!(main);

const WAIT_NS: u64 = 50_000_000;
const POLL_NS: u64 = 1_000_000;

/// Kicks the server through `C-kick`; waits for `C-irq` by polling with short sleeps.
#[derive(Clone)]
struct KernelNotifier {
    kick: usize,
    mask: u64,
}

impl Notifier for KernelNotifier {
    fn notify_peer(&mut self) {
        let _ = notify(self.kick);
    }
    fn take_pending(&mut self) -> bool {
        poll(self.mask).is_ok_and(|bits| bits != 0)
    }
    fn wait(&mut self) -> bool {
        let deadline = time_now_ns() + WAIT_NS;
        loop {
            if self.take_pending() {
                return true;
            }
            let now = time_now_ns();
            if now >= deadline {
                return false;
            }
            sleep_until(now + POLL_NS);
        }
    }
}

fn join<'b>(buf: &'b mut [u8; 64], name: &str, suffix: &str) -> &'b str {
    let name = &name.as_bytes()[..name.len().min(buf.len() - suffix.len())];
    let n = name.len() + suffix.len();
    buf[..name.len()].copy_from_slice(name);
    buf[name.len()..n].copy_from_slice(suffix.as_bytes());
    core::str::from_utf8(&buf[..n]).unwrap_or("")
}

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
    let config = rt::config::read(&mut text).unwrap_or(rt::config::Config::new(""));
    let channel = config.get("channel").unwrap_or("entropy");
    let chunk = config.get_u64("chunk").unwrap_or(256).clamp(1, 4096) as usize;
    let report_ns = config.get_u64("report-ms").unwrap_or(1000).max(1) * 1_000_000;
    let mask = config.get_u64("irq-mask").unwrap_or(u64::MAX);
    let mut b = [0u8; 64];
    let kick_name = config
        .get("kick")
        .unwrap_or_else(|| join(&mut b, channel, "-kick"));
    let region_name = config.get("region").unwrap_or(channel);
    let region = lookup(ObjectKind::SharedRegion, region_name).and_then(region_info);
    let kick = lookup(ObjectKind::Notification, kick_name);
    let (Ok(region), Ok(kick)) = (region, kick) else {
        println!(
            "{channel}: shared region {region_name} or notification {kick_name} not granted: {region:?} {kick:?}"
        );
        return;
    };
    // SAFETY: the kernel mapped the shared region at `address` for this partition and the
    // server for the partition's whole life; it is accessed only through DmaRegion views
    // (volatile and atomic accesses), and the library treats its contents as untrusted.
    let Ok(memory) =
        (unsafe { DmaRegion::new(region.address as *mut u8, region.size as usize, 0) })
    else {
        return;
    };
    let notifier = KernelNotifier { kick, mask };
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
