//! Requests per second through the rings with a simulated null block device: split vs packed,
//! with and without EVENT_IDX, and notifications per request in each direction.
//!
//! Run: `cargo bench -p bulkhead-virtio --bench rings` (optionally
//! `-- <requests> <batch> <notification cost in ns>`).
//! The driver submits a batch, checking after every submission whether to notify (as an eager
//! driver does); the device serves the batch, checking after every completion whether to
//! interrupt; the driver then reaps the batch. Single thread, so the figures measure ring
//! overhead, not cross-core cache traffic. In-process a notification costs nothing, so a second
//! table charges each kick and interrupt a busy-wait standing in for a syscall or VM exit.

use std::hint::black_box;
use std::time::Instant;

use bulkhead_virtio::dma::OwnedDma;
use bulkhead_virtio::features::{Features, bits};
use bulkhead_virtio::packed::{PackedDeviceQueue, PackedLayout, PackedQueue};
use bulkhead_virtio::queue::{Buffer, DeviceQueue, DriverQueue, GrantedArea};
use bulkhead_virtio::split::{SplitDeviceQueue, SplitLayout, SplitQueue};

const QUEUE: usize = 256;
const BUS: u64 = 0x4000_0000;
const DATA: usize = 0x10000;

struct Outcome {
    requests_per_second: f64,
    kicks_per_request: f64,
    interrupts_per_request: f64,
}

/// Stands in for the cost of delivering one notification (a syscall or VM exit).
fn notification(cost_ns: u64) {
    if cost_ns > 0 {
        let start = Instant::now();
        while start.elapsed().as_nanos() < u128::from(cost_ns) {
            std::hint::spin_loop();
        }
    }
}

fn run(packed: bool, event_idx: bool, requests: usize, batch: usize, cost_ns: u64) -> Outcome {
    let memory = OwnedDma::new(DATA + QUEUE * 32);
    let region = memory.region(BUS);
    let ring = region.subregion(0, DATA).unwrap();
    let area = GrantedArea::new(region);
    let mut features = Features::from_bits(&[bits::VERSION_1]);
    if event_idx {
        features = features.with(bits::EVENT_IDX);
    }
    let (mut driver, mut device): (Box<dyn DriverQueue>, Box<dyn DeviceQueue>) = if packed {
        (
            Box::new(PackedQueue::<QUEUE>::new(ring, features).unwrap()),
            Box::new(
                PackedDeviceQueue::new(
                    ring,
                    PackedLayout::new(QUEUE as u16).unwrap(),
                    area,
                    features,
                )
                .unwrap(),
            ),
        )
    } else {
        (
            Box::new(SplitQueue::<QUEUE>::new(ring, features, false).unwrap()),
            Box::new(
                SplitDeviceQueue::new(
                    ring,
                    SplitLayout::new(QUEUE as u16, false).unwrap(),
                    area,
                    features,
                )
                .unwrap(),
            ),
        )
    };
    let (mut kicks, mut interrupts, mut done) = (0usize, 0usize, 0usize);
    let start = Instant::now();
    while done < requests {
        for slot in 0..batch {
            // A null block request: 16-byte header (device-readable), status byte (writable).
            let header = Buffer {
                addr: BUS + (DATA + slot * 32) as u64,
                len: 16,
            };
            let status = Buffer {
                addr: BUS + (DATA + slot * 32 + 16) as u64,
                len: 1,
            };
            driver.submit(&[header], &[status]).unwrap();
            if driver.should_notify().unwrap() {
                kicks += 1;
                notification(cost_ns);
            }
        }
        while let Some(chain) = device.pop().unwrap() {
            let mut writer = chain.writer(&area);
            writer.write(&[0]).unwrap();
            device.push(&chain, writer.written()).unwrap();
            if device.should_interrupt().unwrap() {
                interrupts += 1;
                notification(cost_ns);
            }
        }
        while let Some(completion) = driver.poll_used().unwrap() {
            black_box(completion);
            done += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    Outcome {
        requests_per_second: done as f64 / elapsed,
        kicks_per_request: kicks as f64 / done as f64,
        interrupts_per_request: interrupts as f64 / done as f64,
    }
}

fn table(requests: usize, batch: usize, cost_ns: u64) {
    println!(
        "{requests} null block requests, batches of {batch}, queue size {QUEUE}, notification cost {cost_ns} ns"
    );
    println!(
        "{:<8} {:<10} {:>14} {:>14} {:>16}",
        "ring", "EVENT_IDX", "requests/s", "kicks/req", "interrupts/req"
    );
    for packed in [false, true] {
        for event_idx in [false, true] {
            // A short warm-up run, then the measured one.
            run(packed, event_idx, requests / 10, batch, cost_ns);
            let outcome = run(packed, event_idx, requests, batch, cost_ns);
            println!(
                "{:<8} {:<10} {:>14.0} {:>14.3} {:>16.3}",
                if packed { "packed" } else { "split" },
                if event_idx { "on" } else { "off" },
                outcome.requests_per_second,
                outcome.kicks_per_request,
                outcome.interrupts_per_request,
            );
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let requests = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let batch = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(16)
        .clamp(1, QUEUE / 2);
    let cost_ns = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    println!("virtio rings benchmark");
    table(requests, batch, 0);
    println!();
    table(requests / 10, batch, cost_ns);
}
