//! Driver and device on two threads, sleeping between notifications: a missed kick or
//! interrupt (a barrier in the wrong place, or a re-check missing from the "enable, re-check"
//! idiom) leaves one side asleep with work pending, which the bounded waits turn into a
//! failure. Under Miri this also checks the fences against its data-race detector and weak
//! memory emulation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use super::model::*;
use crate::devices::blk;
use crate::features::bits;
use crate::queue::GrantedArea;

/// A doorbell standing in for a notification: set by one thread, consumed by the other.
#[derive(Default)]
struct Doorbell(AtomicBool);

impl Doorbell {
    fn ring(&self) {
        self.0.store(true, Ordering::Release);
    }
    /// Sleeps until rung; false if it never was (the other side missed a notification).
    fn wait(&self) -> bool {
        let limit = if cfg!(miri) { 20_000 } else { 50_000_000 };
        for _ in 0..limit {
            if self.0.swap(false, Ordering::Acquire) {
                return true;
            }
            thread::yield_now();
        }
        false
    }
}

fn run(format: Format, event_idx: bool, requests: usize) {
    let memory = memory();
    let region = memory.region(BUS);
    let extra: &[u32] = if event_idx { &[bits::EVENT_IDX] } else { &[] };
    let (mut driver, device) = queue_pair::<8>(&memory, format, features(extra));
    // The device queue moves to its own thread; trait objects from queue_pair are not Send,
    // so rebuild it there from the same memory.
    drop(device);
    let kick = Doorbell::default();
    let interrupt = Doorbell::default();
    thread::scope(|scope| {
        let memory = &memory;
        let (kick, interrupt) = (&kick, &interrupt);
        scope.spawn(move || {
            let region = memory.region(BUS);
            let area = GrantedArea::new(region);
            let mut device = device_queue(memory, format, features(extra));
            let mut served = 0;
            while served < requests {
                // Poll with notifications off, as a busy device does; turn them back on (and
                // re-check) only before sleeping.
                device.disable_notifications().unwrap();
                while let Some(chain) = device.pop().unwrap() {
                    let mut reader = chain.reader(&area);
                    let mut header = [0u8; 16];
                    reader.read_exact(&mut header).unwrap();
                    let sector = blk::RequestHeader::from_bytes(&header).sector;
                    let mut writer = chain.writer(&area);
                    // Echo the low byte of the sector as the status, so the driver can check
                    // it got its own request's answer.
                    writer.write(&[sector as u8]).unwrap();
                    device.push(&chain, writer.written()).unwrap();
                    served += 1;
                    if device.should_interrupt().unwrap() {
                        interrupt.ring();
                    }
                }
                if served < requests && !device.enable_notifications().unwrap() {
                    assert!(
                        kick.wait(),
                        "{format:?} event_idx={event_idx}: device missed a kick"
                    );
                }
            }
        });

        let (mut submitted, mut completed) = (0usize, 0usize);
        let mut slot_of = std::collections::HashMap::new();
        while completed < requests {
            while submitted < requests && driver.free_descriptors() >= 2 {
                let slot = submitted % 8;
                let token = submit_block(
                    &mut *driver,
                    &region,
                    slot,
                    blk::request_type::FLUSH,
                    submitted as u64,
                    None,
                    0,
                )
                .unwrap();
                slot_of.insert(token.0, (slot, submitted as u8));
                submitted += 1;
            }
            if driver.should_notify().unwrap() {
                kick.ring();
            }
            let mut progressed = false;
            driver.disable_interrupts().unwrap();
            while let Some(done) = driver.poll_used().unwrap() {
                let (slot, expected) = slot_of.remove(&done.token.0).expect("token in flight");
                assert_eq!(done.written, 1);
                assert_eq!(region.read_u8(slot_offset(slot, 16)).unwrap(), expected);
                completed += 1;
                progressed = true;
            }
            let can_submit = submitted < requests && driver.free_descriptors() >= 2;
            if !progressed
                && !can_submit
                && completed < requests
                && !driver.enable_interrupts().unwrap()
            {
                assert!(
                    interrupt.wait(),
                    "{format:?} event_idx={event_idx}: driver missed an interrupt"
                );
            }
        }
    });
}

fn device_queue<'a>(
    memory: &'a crate::dma::OwnedDma,
    format: Format,
    features: crate::features::Features,
) -> Box<dyn crate::queue::DeviceQueue + Send + 'a> {
    use crate::packed::{PackedDeviceQueue, PackedLayout};
    use crate::split::{SplitDeviceQueue, SplitLayout};
    let region = memory.region(BUS);
    let ring = region.subregion(RING_OFFSET, INDIRECT_OFFSET).unwrap();
    let area = GrantedArea::new(region);
    match format {
        Format::Split => Box::new(
            SplitDeviceQueue::new(ring, SplitLayout::new(8, false).unwrap(), area, features)
                .unwrap(),
        ),
        Format::Packed => Box::new(
            PackedDeviceQueue::new(ring, PackedLayout::new(8).unwrap(), area, features).unwrap(),
        ),
    }
}

#[test]
fn two_threads_never_miss_a_notification() {
    let requests = if cfg!(miri) { 10 } else { 20_000 };
    for format in FORMATS {
        for event_idx in [false, true] {
            run(format, event_idx, requests);
        }
    }
}
