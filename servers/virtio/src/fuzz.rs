//! Fuzz entry points: the two places where bytes from an untrusted peer are parsed.
//!
//! - [`device_chain_parsing`]: an I/O server popping chains from rings a hostile client wrote.
//! - [`driver_used_parsing`]: a driver reading completions a hostile device wrote.
//!
//! Both panic only when an invariant of this crate breaks (that is the finding); errors from
//! the parsers are the expected answer to bad input. They run from `cargo test` (a smoke run
//! over seeded, mutated inputs) and from the cargo-fuzz crate in `servers/virtio/fuzz`.

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use crate::dma::OwnedDma;
use crate::features::{Features, bits};
use crate::packed::{PackedDeviceQueue, PackedLayout, PackedQueue};
use crate::queue::{Buffer, DeviceQueue, DriverQueue, GrantedArea};
use crate::split::{SplitDeviceQueue, SplitLayout, SplitQueue};

/// Queue size used by the fuzz targets.
pub const QUEUE_SIZE: usize = 8;
/// Bytes of simulated memory: the ring at offset 0, buffers anywhere in the rest.
pub const MEMORY_LEN: usize = 8192;
/// Where the driver-side target keeps indirect tables.
const INDIRECT_OFFSET: usize = 2048;

fn features(packed: bool, indirect: bool, event_idx: bool) -> Features {
    let mut features = Features(0).with(bits::VERSION_1);
    if packed {
        features = features.with(bits::RING_PACKED);
    }
    if indirect {
        features = features.with(bits::INDIRECT_DESC);
    }
    if event_idx {
        features = features.with(bits::EVENT_IDX);
    }
    features
}

/// Device side. Input: `[flags, pops, memory image...]`; flags bit 0 = packed, bit 1 =
/// INDIRECT_DESC, bit 2 = EVENT_IDX. The image fills simulated memory (ring at offset 0,
/// buffers named by offset). Returns how many chains were served. Every chain popped must lie in memory, and writing its writable
/// part must change no byte outside its writable segments.
pub fn device_chain_parsing(input: &[u8]) -> usize {
    let mut served = 0;
    let [flags, pops, image @ ..] = input else {
        return served;
    };
    let memory = OwnedDma::new(MEMORY_LEN);
    let region = memory.region(0);
    let image = &image[..image.len().min(MEMORY_LEN)];
    if region.write_bytes(0, image).is_err() {
        return served;
    }
    let area = GrantedArea::new(region);
    let features = features(flags & 1 != 0, flags & 2 != 0, flags & 4 != 0);
    let size = QUEUE_SIZE as u16;
    let mut queue: alloc::boxed::Box<dyn DeviceQueue> = if flags & 1 != 0 {
        let Ok(layout) = PackedLayout::new(size) else {
            return served;
        };
        match PackedDeviceQueue::new(region, layout, area, features) {
            Ok(queue) => alloc::boxed::Box::new(queue),
            Err(_) => return served,
        }
    } else {
        let Ok(layout) = SplitLayout::new(size, false) else {
            return served;
        };
        match SplitDeviceQueue::new(region, layout, area, features) {
            Ok(queue) => alloc::boxed::Box::new(queue),
            Err(_) => return served,
        }
    };
    let mut before = vec![0u8; MEMORY_LEN];
    let mut after = vec![0u8; MEMORY_LEN];
    for _ in 0..(pops % 16) {
        let chain = match queue.pop() {
            Ok(Some(chain)) => chain,
            Ok(None) | Err(_) => return served,
        };
        let mut writable = vec![false; MEMORY_LEN];
        for segment in chain.segments() {
            let end = segment.offset + segment.len as usize;
            assert!(end <= MEMORY_LEN, "segment outside the granted area");
            if segment.writable {
                writable[segment.offset..end]
                    .iter_mut()
                    .for_each(|w| *w = true);
            }
        }
        let mut readable = vec![0u8; chain.readable_len() as usize];
        chain
            .reader(&area)
            .read_exact(&mut readable)
            .expect("readable part is readable");
        region.read_bytes(0, &mut before).expect("in bounds");
        let mut writer = chain.writer(&area);
        let fill = vec![!before[0]; chain.writable_len() as usize];
        writer.write(&fill).expect("writable part is writable");
        region.read_bytes(0, &mut after).expect("in bounds");
        for (offset, (old, new)) in before.iter().zip(&after).enumerate() {
            assert!(
                old == new || writable[offset],
                "device wrote byte {offset} outside the chain"
            );
        }
        let written = writer.written();
        if queue.push(&chain, written).is_err() {
            return served;
        }
        served += 1;
        let _ = queue.should_interrupt();
    }
    let _ = queue.enable_notifications();
    served
}

/// Driver side. Input: `[flags, submissions, shapes..., device bytes...]`; flags bit 0 =
/// packed, bit 1 = EVENT_IDX, bit 2 = INDIRECT_DESC; each shape byte gives a chain's readable
/// (bits 0-1) and writable (bits 2-3) buffer counts. After submitting, the device bytes
/// overwrite everything a device may write (used ring, or the packed descriptor ring) and the
/// driver polls. Returns how many completions were accepted. Every completion must name an in-flight chain, once, with a length within its
/// writable buffers, and the free count must never exceed the queue size.
pub fn driver_used_parsing(input: &[u8]) -> usize {
    let mut completed = 0;
    let [flags, submissions, rest @ ..] = input else {
        return completed;
    };
    let submissions = usize::from(submissions % (QUEUE_SIZE as u8 + 1)).min(rest.len());
    let (shapes, device_bytes) = rest.split_at(submissions);
    let memory = OwnedDma::new(MEMORY_LEN);
    let region = memory.region(0x1000_0000);
    let Ok(ring) = region.subregion(0, INDIRECT_OFFSET) else {
        return completed;
    };
    let Ok(indirect) = region.subregion(INDIRECT_OFFSET, 4096) else {
        return completed;
    };
    let packed = flags & 1 != 0;
    let features = features(packed, flags & 4 != 0, flags & 2 != 0);
    let (mut queue, device_area): (alloc::boxed::Box<dyn DriverQueue>, (usize, usize)) = if packed {
        let Ok(mut queue) = PackedQueue::<QUEUE_SIZE>::new(ring, features) else {
            return completed;
        };
        if flags & 4 != 0 {
            let Ok(with) = queue.with_indirect(indirect, 4) else {
                return completed;
            };
            queue = with;
        }
        let layout = queue.layout();
        (
            alloc::boxed::Box::new(queue),
            (layout.ring(), layout.total()),
        )
    } else {
        let Ok(mut queue) = SplitQueue::<QUEUE_SIZE>::new(ring, features, false) else {
            return completed;
        };
        if flags & 4 != 0 {
            let Ok(with) = queue.with_indirect(indirect, 4) else {
                return completed;
            };
            queue = with;
        }
        let layout = queue.layout();
        (
            alloc::boxed::Box::new(queue),
            (layout.used(), layout.total()),
        )
    };
    let mut in_flight = BTreeMap::new();
    for (i, shape) in shapes.iter().enumerate() {
        let buffer = |n: usize| Buffer {
            addr: 0x1000_0000 + 4096 + (i * 64 + n * 8) as u64,
            len: 8,
        };
        let readable: Vec<Buffer> = (0..usize::from(shape & 3)).map(buffer).collect();
        let writable: Vec<Buffer> = (0..usize::from((shape >> 2) & 3))
            .map(|n| buffer(n + 4))
            .collect();
        if let Ok(token) = queue.submit(&readable, &writable) {
            assert!(
                in_flight
                    .insert(token.0, writable.len() as u32 * 8)
                    .is_none(),
                "token reused"
            );
        }
    }
    let (start, end) = device_area;
    let take = device_bytes.len().min(end - start);
    if ring.write_bytes(start, &device_bytes[..take]).is_err() {
        return completed;
    }
    for _ in 0..2 * QUEUE_SIZE {
        match queue.poll_used() {
            Ok(Some(completion)) => {
                let limit = in_flight
                    .remove(&completion.token.0)
                    .expect("completion for a chain in flight");
                assert!(
                    completion.written <= limit,
                    "length beyond the writable buffers"
                );
                completed += 1;
            }
            Ok(None) | Err(_) => break,
        }
        assert!(queue.free_descriptors() <= QUEUE_SIZE);
    }
    let _ = queue.enable_interrupts();
    completed
}

/// A valid device-side input: a driver's ring after submitting a few chains, for seeding.
pub fn device_chain_seed(packed: bool, indirect: bool, event_idx: bool, chains: usize) -> Vec<u8> {
    let memory = OwnedDma::new(MEMORY_LEN);
    let region = memory.region(0);
    let features = features(packed, indirect, event_idx);
    let Ok(ring) = region.subregion(0, INDIRECT_OFFSET) else {
        return Vec::new();
    };
    let Ok(tables) = region.subregion(INDIRECT_OFFSET, 4096) else {
        return Vec::new();
    };
    let mut queue: alloc::boxed::Box<dyn DriverQueue> = if packed {
        let queue = PackedQueue::<QUEUE_SIZE>::new(ring, features).expect("fits");
        alloc::boxed::Box::new(if indirect {
            queue.with_indirect(tables, 4).expect("fits")
        } else {
            queue
        })
    } else {
        let queue = SplitQueue::<QUEUE_SIZE>::new(ring, features, false).expect("fits");
        alloc::boxed::Box::new(if indirect {
            queue.with_indirect(tables, 4).expect("fits")
        } else {
            queue
        })
    };
    for i in 0..chains {
        let buffer = |n: u64| Buffer {
            addr: 6144 + i as u64 * 128 + n * 16,
            len: 16,
        };
        let _ = queue.submit(&[buffer(0), buffer(1)], &[buffer(2)]);
    }
    let mut image = vec![0u8; MEMORY_LEN];
    region.read_bytes(0, &mut image).expect("in bounds");
    let flags = u8::from(packed) | u8::from(indirect) << 1 | u8::from(event_idx) << 2;
    let mut input = vec![flags, chains as u8 + 1];
    input.extend_from_slice(&image);
    input
}
