//! Ring behaviour, both formats: block requests end to end, network frames, wraparound, ring
//! full, indirect chains, and EVENT_IDX measured by counting notifications.

use super::model::*;
use crate::Error;
use crate::devices::{blk, net};
use crate::features::bits;
use crate::queue::{Buffer, Chain, DriverQueue, GrantedArea};

fn complete_all(driver: &mut dyn DriverQueue) -> Vec<(u16, u32)> {
    let mut done = Vec::new();
    while let Some(completion) = driver.poll_used().unwrap() {
        done.push((completion.token.0, completion.written));
    }
    done
}

#[test]
fn block_requests_end_to_end() {
    for format in FORMATS {
        for extra in [&[][..], &[bits::EVENT_IDX, bits::INDIRECT_DESC][..]] {
            let memory = memory();
            let region = memory.region(BUS);
            let area = GrantedArea::new(region);
            let (mut driver, mut device) = queue_pair::<16>(&memory, format, features(extra));
            let mut disk = BlockModel::new(64);

            let payload: Vec<u8> = (0..1024u32).map(|i| (i * 7 + 3) as u8).collect();
            let write = submit_block(
                &mut *driver,
                &region,
                0,
                blk::request_type::OUT,
                4,
                Some(&payload),
                0,
            )
            .unwrap();
            assert!(
                driver.should_notify().unwrap(),
                "{format:?}: first submission must notify"
            );
            assert_eq!(disk.serve(&mut *device, &area).unwrap(), 1);
            let done = complete_all(&mut *driver);
            assert_eq!(
                done,
                vec![(write.0, 1)],
                "{format:?}: write completes with status only"
            );
            assert_eq!(region.read_u8(slot_offset(0, 16)).unwrap(), blk::status::OK);
            assert_eq!(&disk.disk[4 * 512..4 * 512 + 1024], &payload[..]);

            let read = submit_block(
                &mut *driver,
                &region,
                1,
                blk::request_type::IN,
                4,
                None,
                1024,
            )
            .unwrap();
            let id = submit_block(
                &mut *driver,
                &region,
                2,
                blk::request_type::GET_ID,
                0,
                None,
                20,
            )
            .unwrap();
            let bad = submit_block(&mut *driver, &region, 3, 0x7777, 0, None, 0).unwrap();
            disk.serve(&mut *device, &area).unwrap();
            let done = complete_all(&mut *driver);
            assert_eq!(done, vec![(read.0, 1025), (id.0, 21), (bad.0, 1)]);
            let mut back = vec![0u8; 1024];
            region.read_bytes(slot_offset(1, 4096), &mut back).unwrap();
            assert_eq!(back, payload);
            let mut name = [0u8; 20];
            region.read_bytes(slot_offset(2, 4096), &mut name).unwrap();
            assert_eq!(&name, BLOCK_ID);
            assert_eq!(
                region.read_u8(slot_offset(3, 16)).unwrap(),
                blk::status::UNSUPP
            );
            assert_eq!(
                driver.free_descriptors(),
                16,
                "{format:?}: all descriptors returned"
            );
        }
    }
}

#[test]
fn net_frames_loop_back() {
    for format in FORMATS {
        let memory = memory();
        let region = memory.region(BUS);
        let area = GrantedArea::new(region);
        let (mut rx_driver, mut rx_device) = queue_pair::<8>(&memory, format, features(&[]));
        // The second queue lives in its own part of memory.
        let tx_memory = self::memory();
        let (mut tx_driver, mut tx_device) = queue_pair::<8>(&tx_memory, format, features(&[]));
        // Frames are written into `memory`'s data area, so the tx device reads through it too.
        let mut nic = LoopbackNet {
            frames: 0,
            dropped: 0,
        };
        for slot in 0..4 {
            rx_driver
                .submit(
                    &[],
                    &[Buffer {
                        addr: slot_address(slot, 0),
                        len: 1526,
                    }],
                )
                .unwrap();
        }
        for n in 0..3usize {
            let header = net::Header::default();
            let frame: Vec<u8> = (0..60 + n * 10).map(|i| (i + n) as u8).collect();
            let slot = 4 + n;
            region
                .write_bytes(slot_offset(slot, 0), &header.to_bytes())
                .unwrap();
            region
                .write_bytes(slot_offset(slot, net::Header::SIZE), &frame)
                .unwrap();
            tx_driver
                .submit(
                    &[Buffer {
                        addr: slot_address(slot, 0),
                        len: (net::Header::SIZE + frame.len()) as u32,
                    }],
                    &[],
                )
                .unwrap();
        }
        assert_eq!(
            nic.serve(&mut *tx_device, &mut *rx_device, &area).unwrap(),
            3
        );
        assert_eq!(complete_all(&mut *tx_driver).len(), 3);
        let received = complete_all(&mut *rx_driver);
        assert_eq!(received.len(), 3, "{format:?}");
        for (n, (token, written)) in received.into_iter().enumerate() {
            assert_eq!(written as usize, net::Header::SIZE + 60 + n * 10);
            let slot = usize::from(token);
            let slot = if format == Format::Split {
                slot
            } else {
                [0usize, 1, 2, 3][n]
            };
            let mut header = [0u8; net::Header::SIZE];
            region
                .read_bytes(slot_offset(slot, 0), &mut header)
                .unwrap();
            assert_eq!(net::Header::from_bytes(&header).num_buffers, 1);
            let mut frame = vec![0u8; 60 + n * 10];
            region
                .read_bytes(slot_offset(slot, net::Header::SIZE), &mut frame)
                .unwrap();
            assert_eq!(
                frame,
                (0..60 + n * 10).map(|i| (i + n) as u8).collect::<Vec<_>>()
            );
        }
    }
}

/// Runs `rounds` request/response rounds of `batch` requests on a tiny ring.
fn run_rounds(format: Format, extra: &[u32], rounds: usize, batch: usize) {
    let memory = memory();
    let region = memory.region(BUS);
    let area = GrantedArea::new(region);
    let (mut driver, mut device) = queue_pair::<4>(&memory, format, features(extra));
    let mut disk = BlockModel::new(8);
    let mut rng = Rng(0x5eed ^ rounds as u64);
    for round in 0..rounds {
        let mut expected = Vec::new();
        for slot in 0..batch {
            let byte = (round + slot) as u8;
            let data = [byte; 8];
            let sector = rng.below(4);
            let token = submit_block(
                &mut *driver,
                &region,
                slot,
                blk::request_type::OUT,
                sector,
                Some(&data),
                0,
            )
            .unwrap();
            expected.push((token.0, 1));
        }
        disk.serve(&mut *device, &area).unwrap();
        let mut done = complete_all(&mut *driver);
        done.sort();
        expected.sort();
        assert_eq!(done, expected, "{format:?} round {round}");
    }
    assert_eq!(driver.free_descriptors(), 4);
    assert_eq!(disk.requests, rounds * batch);
}

#[test]
fn ring_wraps_around() {
    for format in FORMATS {
        // A 4-entry ring: every index wraps many times; packed wrap counters flip each lap.
        run_rounds(format, &[], 40, 1);
        run_rounds(format, &[bits::EVENT_IDX], 40, 1);
        run_rounds(format, &[bits::INDIRECT_DESC], 30, 2);
    }
}

#[test]
#[cfg_attr(miri, ignore)]
fn sixteen_bit_indexes_wrap() {
    for format in FORMATS {
        // More than 65536 requests: the split ring's u16 idx fields wrap.
        run_rounds(format, &[bits::EVENT_IDX], 70_000, 1);
    }
}

#[test]
fn ring_full_then_space_after_completion() {
    for format in FORMATS {
        let memory = memory();
        let region = memory.region(BUS);
        let area = GrantedArea::new(region);
        let (mut driver, mut device) = queue_pair::<8>(&memory, format, features(&[]));
        let mut disk = BlockModel::new(8);
        // Each write uses three descriptors (header, data, status): two fit in eight.
        for slot in 0..2 {
            submit_block(
                &mut *driver,
                &region,
                slot,
                blk::request_type::OUT,
                0,
                Some(&[1; 4]),
                0,
            )
            .unwrap();
        }
        assert_eq!(driver.free_descriptors(), 2);
        let full = submit_block(
            &mut *driver,
            &region,
            2,
            blk::request_type::OUT,
            0,
            Some(&[1; 4]),
            0,
        );
        assert_eq!(full, Err(Error::QueueFull), "{format:?}");
        // A two-descriptor request still fits.
        submit_block(
            &mut *driver,
            &region,
            3,
            blk::request_type::FLUSH,
            0,
            None,
            0,
        )
        .unwrap();
        assert_eq!(driver.free_descriptors(), 0);
        assert_eq!(
            driver.submit(
                &[Buffer {
                    addr: slot_address(5, 0),
                    len: 1
                }],
                &[]
            ),
            Err(Error::QueueFull)
        );
        assert_eq!(disk.serve(&mut *device, &area).unwrap(), 3);
        assert_eq!(complete_all(&mut *driver).len(), 3);
        assert_eq!(driver.free_descriptors(), 8);
        submit_block(
            &mut *driver,
            &region,
            2,
            blk::request_type::OUT,
            0,
            Some(&[1; 4]),
            0,
        )
        .unwrap();
        assert_eq!(driver.submit(&[], &[]), Err(Error::EmptyChain));
    }
}

#[test]
fn indirect_chains_use_one_descriptor() {
    for format in FORMATS {
        let memory = memory();
        let region = memory.region(BUS);
        let area = GrantedArea::new(region);
        let (mut driver, mut device) =
            queue_pair::<8>(&memory, format, features(&[bits::INDIRECT_DESC]));
        // Six buffers: three readable, three writable; one ring descriptor.
        let readable: Vec<Buffer> = (0..3)
            .map(|i| Buffer {
                addr: slot_address(0, i * 100),
                len: 10,
            })
            .collect();
        let writable: Vec<Buffer> = (0..3)
            .map(|i| Buffer {
                addr: slot_address(1, i * 100),
                len: 20,
            })
            .collect();
        for (i, buffer) in readable.iter().enumerate() {
            region
                .fill((buffer.addr - BUS) as usize, 10, i as u8 + 1)
                .unwrap();
        }
        let token = driver.submit(&readable, &writable).unwrap();
        assert_eq!(
            driver.free_descriptors(),
            7,
            "{format:?}: indirect chain costs one slot"
        );
        let chain = device.pop().unwrap().unwrap();
        assert_eq!(chain.segments().len(), 6);
        assert_eq!((chain.readable_len(), chain.writable_len()), (30, 60));
        let mut bytes = [0u8; 30];
        chain.reader(&area).read_exact(&mut bytes).unwrap();
        assert_eq!(&bytes[..], &[[1u8; 10], [2; 10], [3; 10]].concat()[..]);
        let mut writer = chain.writer(&area);
        writer.write(&[0xab; 45]).unwrap();
        assert_eq!(
            writer.write(&[0; 16]),
            Err(Error::NotWritable),
            "cannot write past the chain"
        );
        device.push(&chain, writer.written()).unwrap();
        let completion = driver.poll_used().unwrap().unwrap();
        assert_eq!((completion.token, completion.written), (token, 45));
        let mut out = [0u8; 20];
        region.read_bytes(slot_offset(1, 200), &mut out).unwrap();
        assert_eq!(&out[..5], &[0xab; 5]);
        assert_eq!(&out[5..], &[0; 15], "only `written` bytes were touched");
        // A chain longer than a table falls back to direct descriptors.
        let many: Vec<Buffer> = (0..9)
            .map(|i| Buffer {
                addr: slot_address(2, i),
                len: 1,
            })
            .collect();
        assert_eq!(driver.submit(&many, &[]), Err(Error::QueueFull));
    }
}

#[test]
fn pop_into_replaces_what_the_chain_held() {
    for format in FORMATS {
        let memory = memory();
        let (mut driver, mut device) = queue_pair::<8>(&memory, format, features(&[]));
        let buffer = |slot, len| Buffer {
            addr: slot_address(slot, 0),
            len,
        };
        let mut chain = Chain::empty();
        assert!(
            !device.pop_into(&mut chain).unwrap(),
            "{format:?}: empty queue"
        );
        // A long chain, then a short one into the same storage.
        let long = driver
            .submit(
                &[buffer(0, 16), buffer(1, 32)],
                &[buffer(2, 64), buffer(3, 1)],
            )
            .unwrap();
        assert!(device.pop_into(&mut chain).unwrap());
        assert_eq!(chain.segments().len(), 4);
        assert_eq!((chain.readable_len(), chain.writable_len()), (48, 65));
        device.push(&chain, 0).unwrap();
        let short = driver.submit(&[], &[buffer(4, 8)]).unwrap();
        assert!(device.pop_into(&mut chain).unwrap());
        assert_eq!(
            chain.segments().len(),
            1,
            "{format:?}: nothing of the long chain left"
        );
        assert_eq!((chain.readable_len(), chain.writable_len()), (0, 8));
        assert!(chain.segments()[0].writable);
        device.push(&chain, 8).unwrap();
        let done = complete_all(&mut *driver);
        assert_eq!(done, vec![(long.0, 0), (short.0, 8)], "{format:?}");
    }
}

/// Counts notifications in both directions for `requests` requests submitted one at a time
/// while the device is busy, then served in one pass.
fn count_notifications(format: Format, event_idx: bool, requests: usize) -> (usize, usize) {
    let memory = memory();
    let region = memory.region(BUS);
    let area = GrantedArea::new(region);
    let extra: &[u32] = if event_idx { &[bits::EVENT_IDX] } else { &[] };
    let (mut driver, mut device) = queue_pair::<16>(&memory, format, features(extra));
    let mut disk = BlockModel::new(8);
    let (mut kicks, mut interrupts) = (0, 0);
    for slot in 0..requests {
        submit_block(
            &mut *driver,
            &region,
            slot,
            blk::request_type::FLUSH,
            0,
            None,
            0,
        )
        .unwrap();
        kicks += usize::from(driver.should_notify().unwrap());
    }
    while let Some(chain) = device.pop().unwrap() {
        let mut writer = chain.writer(&area);
        writer.write(&[blk::status::OK]).unwrap();
        device.push(&chain, writer.written()).unwrap();
        interrupts += usize::from(device.should_interrupt().unwrap());
    }
    assert_eq!(complete_all(&mut *driver).len(), requests);
    assert!(!driver.enable_interrupts().unwrap());
    let _ = disk.serve(&mut *device, &area);
    (kicks, interrupts)
}

#[test]
fn event_idx_avoids_notifications() {
    for format in FORMATS {
        let (kicks, interrupts) = count_notifications(format, false, 6);
        assert_eq!(
            (kicks, interrupts),
            (6, 6),
            "{format:?}: without EVENT_IDX every event notifies"
        );
        let (kicks, interrupts) = count_notifications(format, true, 6);
        assert_eq!(
            (kicks, interrupts),
            (1, 1),
            "{format:?}: EVENT_IDX avoids 5 of 6 each way"
        );
    }
}

#[test]
fn polling_mode_suppresses_notifications() {
    for format in FORMATS {
        for extra in [&[][..], &[bits::EVENT_IDX][..]] {
            let memory = memory();
            let region = memory.region(BUS);
            let area = GrantedArea::new(region);
            let (mut driver, mut device) = queue_pair::<8>(&memory, format, features(extra));
            driver.disable_interrupts().unwrap();
            device.disable_notifications().unwrap();
            let mut disk = BlockModel::new(8);
            for round in 0..3 {
                submit_block(
                    &mut *driver,
                    &region,
                    round,
                    blk::request_type::FLUSH,
                    0,
                    None,
                    0,
                )
                .unwrap();
                assert!(
                    !driver.should_notify().unwrap(),
                    "{format:?} {extra:?}: device polls"
                );
                disk.serve(&mut *device, &area).unwrap();
                assert!(
                    !device.should_interrupt().unwrap(),
                    "{format:?} {extra:?}: driver polls"
                );
                assert_eq!(complete_all(&mut *driver).len(), 1);
            }
            // Re-enabling reports work that is already pending (request, re-check, cancel).
            submit_block(
                &mut *driver,
                &region,
                0,
                blk::request_type::FLUSH,
                0,
                None,
                0,
            )
            .unwrap();
            assert!(device.enable_notifications().unwrap());
            disk.serve(&mut *device, &area).unwrap();
            assert!(driver.enable_interrupts().unwrap());
            assert_eq!(complete_all(&mut *driver).len(), 1);
            assert!(!driver.enable_interrupts().unwrap());
            assert!(!device.enable_notifications().unwrap());
        }
    }
}

#[test]
fn random_batches_complete_exactly_once() {
    for format in FORMATS {
        let memory = memory();
        let (mut driver, mut device) = queue_pair::<8>(
            &memory,
            format,
            features(&[bits::EVENT_IDX, bits::INDIRECT_DESC]),
        );
        let mut rng = Rng(42);
        let mut outstanding = std::collections::HashSet::new();
        let rounds = if cfg!(miri) { 30 } else { 500 };
        for _ in 0..rounds {
            for _ in 0..rng.below(4) {
                let readable = rng.below(3) as usize;
                let writable = 1 + rng.below(3) as usize;
                let bufs = |base: usize, n: usize| -> Vec<Buffer> {
                    (0..n)
                        .map(|i| Buffer {
                            addr: slot_address(base, i * 16),
                            len: 16,
                        })
                        .collect()
                };
                match driver.submit(&bufs(0, readable), &bufs(1, writable)) {
                    Ok(token) => {
                        assert!(outstanding.insert(token.0), "token reused while in flight")
                    }
                    Err(Error::QueueFull) => {}
                    Err(other) => panic!("{other:?}"),
                }
            }
            // The device completes a random number of chains, out of order for split.
            let mut held = Vec::new();
            for _ in 0..rng.below(4) {
                if let Some(chain) = device.pop().unwrap() {
                    held.push(chain);
                }
            }
            while !held.is_empty() {
                let chain = held.swap_remove(rng.below(held.len() as u64) as usize);
                let written = rng.below(chain.writable_len() + 1) as u32;
                device.push(&chain, written).unwrap();
            }
            while let Some(done) = driver.poll_used().unwrap() {
                assert!(
                    outstanding.remove(&done.token.0),
                    "completion for a token not in flight"
                );
            }
        }
        while let Some(chain) = device.pop().unwrap() {
            device.push(&chain, 0).unwrap();
        }
        while let Some(done) = driver.poll_used().unwrap() {
            assert!(outstanding.remove(&done.token.0));
        }
        assert!(
            outstanding.is_empty(),
            "{format:?}: every chain completed exactly once"
        );
        assert_eq!(driver.free_descriptors(), 8);
    }
}
