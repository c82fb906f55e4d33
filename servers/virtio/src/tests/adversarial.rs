//! Each side facing a hostile peer: hand-crafted rings that break the rules must produce
//! errors, never panics, out-of-bounds accesses, or writes outside device-writable buffers.

use super::model::*;
use crate::Error;
use crate::dma::DmaRegion;
use crate::features::{Features, bits};
use crate::packed::{self, PackedDeviceQueue, PackedLayout, PackedQueue};
use crate::queue::{Buffer, DeviceQueue, DriverQueue, GrantedArea};
use crate::split::{self, Descriptor, SplitDeviceQueue, SplitLayout, SplitQueue};

const N: u16 = 8;

/// A hostile driver writing a split ring by hand.
struct SplitForger<'a> {
    ring: DmaRegion<'a>,
    layout: SplitLayout,
    avail: u16,
}

impl<'a> SplitForger<'a> {
    fn new(ring: DmaRegion<'a>) -> Self {
        Self {
            ring,
            layout: SplitLayout::new(N, false).unwrap(),
            avail: 0,
        }
    }
    fn desc(&self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        Descriptor {
            addr,
            len,
            flags,
            next,
        }
        .write(&self.ring, self.layout.desc_entry(index))
        .unwrap();
    }
    fn publish(&mut self, head: u16) {
        self.ring
            .write_u16(self.layout.avail_entry(self.avail), head)
            .unwrap();
        self.avail = self.avail.wrapping_add(1);
        self.ring
            .write_u16(self.layout.avail_idx(), self.avail)
            .unwrap();
    }
}

fn split_device<'a>(region: DmaRegion<'a>, features: Features) -> SplitDeviceQueue<'a> {
    SplitDeviceQueue::new(
        region,
        SplitLayout::new(N, false).unwrap(),
        GrantedArea::new(region),
        features,
    )
    .unwrap()
}

const W: u16 = split::DESC_F_WRITE;
const NX: u16 = split::DESC_F_NEXT;
const IND: u16 = split::DESC_F_INDIRECT;

fn data(offset: usize) -> u64 {
    slot_address(0, offset)
}

/// Runs one forged chain through a fresh split device and returns what `pop` says.
fn split_pop(features: Features, forge: impl FnOnce(&mut SplitForger<'_>)) -> Result<usize, Error> {
    let memory = memory();
    let region = memory.region(BUS);
    let mut forger = SplitForger::new(region);
    forge(&mut forger);
    let mut device = split_device(region, features);
    device
        .pop()
        .map(|chain| chain.map_or(0, |c| c.segments().len()))
}

#[test]
fn split_device_rejects_malformed_chains() {
    let plain = features(&[]);
    let indirect = features(&[bits::INDIRECT_DESC]);
    type Forge = Box<dyn FnOnce(&mut SplitForger<'_>)>;
    let cases: Vec<(&str, Features, Forge, Error)> = vec![
        (
            "loop",
            plain,
            Box::new(|f| {
                f.desc(0, data(0), 4, NX, 1);
                f.desc(1, data(8), 4, NX, 0);
                f.publish(0);
            }),
            Error::DescriptorLoop,
        ),
        (
            "self loop",
            plain,
            Box::new(|f| {
                f.desc(3, data(0), 4, NX, 3);
                f.publish(3);
            }),
            Error::DescriptorLoop,
        ),
        (
            "next out of table",
            plain,
            Box::new(|f| {
                f.desc(0, data(0), 4, NX, 99);
                f.publish(0);
            }),
            Error::BadDescriptorIndex,
        ),
        (
            "head out of table",
            plain,
            Box::new(|f| f.publish(N)),
            Error::BadDescriptorIndex,
        ),
        (
            "buffer past the grant",
            plain,
            Box::new(|f| {
                f.desc(0, BUS + MEMORY_LEN as u64 - 4, 8, 0, 0);
                f.publish(0);
            }),
            Error::BufferOutsideGrant,
        ),
        (
            "buffer below the grant",
            plain,
            Box::new(|f| {
                f.desc(0, BUS - 16, 8, 0, 0);
                f.publish(0);
            }),
            Error::BufferOutsideGrant,
        ),
        (
            "address overflow",
            plain,
            Box::new(|f| {
                f.desc(0, u64::MAX - 2, 8, W, 0);
                f.publish(0);
            }),
            Error::BufferOutsideGrant,
        ),
        (
            "readable after writable",
            plain,
            Box::new(|f| {
                f.desc(0, data(0), 4, W | NX, 1);
                f.desc(1, data(8), 4, 0, 0);
                f.publish(0);
            }),
            Error::DirectionOrder,
        ),
        (
            "indirect not negotiated",
            plain,
            Box::new(|f| {
                f.desc(0, data(0), 32, IND, 0);
                f.publish(0);
            }),
            Error::BadIndirectTable,
        ),
        (
            "indirect with next",
            indirect,
            Box::new(|f| {
                f.desc(0, data(0), 32, IND | NX, 1);
                f.publish(0);
            }),
            Error::BadIndirectTable,
        ),
        (
            "indirect partial descriptor",
            indirect,
            Box::new(|f| {
                f.desc(0, data(0), 17, IND, 0);
                f.publish(0);
            }),
            Error::BadIndirectTable,
        ),
        (
            "indirect empty",
            indirect,
            Box::new(|f| {
                f.desc(0, data(0), 0, IND, 0);
                f.publish(0);
            }),
            Error::BadIndirectTable,
        ),
        (
            "indirect longer than queue",
            indirect,
            Box::new(|f| {
                f.desc(0, data(0), 16 * (u32::from(N) + 1), IND, 0);
                f.publish(0);
            }),
            Error::BadIndirectTable,
        ),
        (
            "indirect table outside grant",
            indirect,
            Box::new(|f| {
                f.desc(0, BUS + MEMORY_LEN as u64 - 16, 32, IND, 0);
                f.publish(0);
            }),
            Error::BufferOutsideGrant,
        ),
        (
            "nested indirect",
            indirect,
            Box::new(|f| {
                let table = slot_offset(0, 0);
                Descriptor {
                    addr: data(64),
                    len: 16,
                    flags: IND,
                    next: 0,
                }
                .write(&f.ring, table)
                .unwrap();
                f.desc(0, data(0), 16, IND, 0);
                f.publish(0);
            }),
            Error::BadIndirectTable,
        ),
        (
            "loop inside indirect table",
            indirect,
            Box::new(|f| {
                let table = slot_offset(0, 0);
                Descriptor {
                    addr: data(128),
                    len: 4,
                    flags: NX,
                    next: 1,
                }
                .write(&f.ring, table)
                .unwrap();
                Descriptor {
                    addr: data(128),
                    len: 4,
                    flags: NX,
                    next: 0,
                }
                .write(&f.ring, table + 16)
                .unwrap();
                f.desc(0, data(0), 32, IND, 0);
                f.publish(0);
            }),
            Error::DescriptorLoop,
        ),
        (
            "indirect next out of table",
            indirect,
            Box::new(|f| {
                let table = slot_offset(0, 0);
                Descriptor {
                    addr: data(128),
                    len: 4,
                    flags: NX,
                    next: 2,
                }
                .write(&f.ring, table)
                .unwrap();
                f.desc(0, data(0), 32, IND, 0);
                f.publish(0);
            }),
            Error::BadDescriptorIndex,
        ),
        (
            "avail idx beyond queue size",
            plain,
            Box::new(|f| {
                f.desc(0, data(0), 4, 0, 0);
                f.ring.write_u16(f.layout.avail_idx(), N + 1).unwrap();
            }),
            Error::BadAvailIndex,
        ),
    ];
    for (name, features, forge, expected) in cases {
        assert_eq!(split_pop(features, forge), Err(expected), "{name}");
    }
}

#[test]
fn split_device_bounds_chain_segments() {
    // A long but legal chain in a 128-entry queue exceeds the server's segment limit.
    let memory = memory();
    let region = memory.region(BUS);
    let layout = SplitLayout::new(128, false).unwrap();
    for i in 0..100u16 {
        Descriptor {
            addr: data(usize::from(i)),
            len: 1,
            flags: NX,
            next: i + 1,
        }
        .write(&region, layout.desc_entry(i))
        .unwrap();
    }
    region.write_u16(layout.avail_entry(0), 0).unwrap();
    region.write_u16(layout.avail_idx(), 1).unwrap();
    let mut device =
        SplitDeviceQueue::new(region, layout, GrantedArea::new(region), features(&[])).unwrap();
    assert_eq!(device.pop().map(|c| c.is_some()), Err(Error::ChainTooLong));
}

#[test]
fn split_device_uses_its_copy_not_the_ring() {
    // TOCTOU: the driver rewrites a descriptor after the device validated it; the device must
    // keep using what it validated.
    let memory = memory();
    let region = memory.region(BUS);
    let mut forger = SplitForger::new(region);
    forger.desc(0, data(0), 8, W, 0);
    forger.publish(0);
    let mut device = split_device(region, features(&[]));
    let chain = device.pop().unwrap().unwrap();
    forger.desc(0, BUS + 0x100, 0x1000, W, 0); // now pointing at the rings
    let area = GrantedArea::new(region);
    let mut writer = chain.writer(&area);
    writer.write(&[0x5a; 8]).unwrap();
    assert_eq!(writer.write(&[0]), Err(Error::NotWritable));
    assert_eq!(
        region.read_u64(slot_offset(0, 0)).unwrap(),
        0x5a5a_5a5a_5a5a_5a5a
    );
    assert_eq!(
        region.read_u64(0x100).unwrap(),
        Descriptor::read(&region, 0x100).unwrap().addr
    );
    // Readable-only chains refuse writes entirely.
    forger.desc(1, data(16), 8, 0, 0);
    forger.publish(1);
    let chain = device.pop().unwrap().unwrap();
    assert_eq!(chain.writer(&area).write(&[1]), Err(Error::NotWritable));
    assert_eq!(
        device.push(&chain, 1),
        Err(Error::BadUsedLength),
        "cannot claim writes"
    );
}

/// A hostile device answering a real driver's split ring.
#[test]
fn split_driver_checks_used_ring() {
    let memory = memory();
    let region = memory.region(BUS);
    let layout = SplitLayout::new(N, false).unwrap();
    let mut driver = SplitQueue::<8>::new(region, features(&[]), false).unwrap();
    let token = driver
        .submit(
            &[Buffer {
                addr: data(0),
                len: 4,
            }],
            &[Buffer {
                addr: data(8),
                len: 8,
            }],
        )
        .unwrap();
    let forge_used = |slot: u16, id: u32, len: u32, idx: u16| {
        region.write_u32(layout.used_entry(slot), id).unwrap();
        region.write_u32(layout.used_entry(slot) + 4, len).unwrap();
        region.write_u16(layout.used_idx(), idx).unwrap();
    };
    forge_used(0, 99, 0, 1);
    assert_eq!(
        driver.poll_used(),
        Err(Error::BadUsedId),
        "id outside the table"
    );
    forge_used(0, 5, 0, 1);
    assert_eq!(
        driver.poll_used(),
        Err(Error::BadUsedId),
        "id of a free descriptor"
    );
    forge_used(0, u32::from(token.0) + (1 << 16), 0, 1);
    assert_eq!(
        driver.poll_used(),
        Err(Error::BadUsedId),
        "id truncation is not accepted"
    );
    forge_used(0, u32::from(token.0), 9, 1);
    assert_eq!(
        driver.poll_used(),
        Err(Error::BadUsedLength),
        "more than the writable length"
    );
    forge_used(0, u32::from(token.0), 0, 2);
    assert_eq!(
        driver.poll_used(),
        Err(Error::Protocol),
        "more used than made available"
    );
    forge_used(0, u32::from(token.0), 8, 1);
    assert_eq!(driver.poll_used().unwrap().unwrap().written, 8);
    // The same chain returned twice.
    forge_used(1, u32::from(token.0), 8, 2);
    assert_eq!(driver.poll_used(), Err(Error::Protocol));
    assert_eq!(driver.free_descriptors(), 8);
}

/// A hostile driver writing a packed ring by hand.
fn packed_desc(ring: &DmaRegion<'_>, slot: u16, addr: u64, len: u32, id: u16, flags: u16) {
    let layout = PackedLayout::new(N).unwrap();
    let at = layout.slot(slot);
    ring.write_u64(at, addr).unwrap();
    ring.write_u32(at + 8, len).unwrap();
    ring.write_u16(at + 12, id).unwrap();
    ring.write_u16(at + 14, flags).unwrap();
}

fn packed_pop(features: Features, forge: impl FnOnce(&DmaRegion<'_>)) -> Result<usize, Error> {
    let memory = memory();
    let region = memory.region(BUS);
    forge(&region);
    let mut device = PackedDeviceQueue::new(
        region,
        PackedLayout::new(N).unwrap(),
        GrantedArea::new(region),
        features,
    )
    .unwrap();
    device
        .pop()
        .map(|chain| chain.map_or(0, |c| c.segments().len()))
}

#[test]
fn packed_device_rejects_malformed_chains() {
    let plain = features(&[]);
    let indirect = features(&[bits::INDIRECT_DESC]);
    let avail = packed::DESC_F_AVAIL; // available under the initial wrap counter (1)
    let nx = packed::DESC_F_NEXT;
    assert_eq!(
        packed_pop(plain, |_| {}),
        Ok(0),
        "an all-zero ring has nothing available"
    );
    assert_eq!(
        packed_pop(plain, |r| {
            packed_desc(r, 0, data(0), 4, 0, avail | nx);
            packed_desc(r, 1, data(8), 4, 0, 0);
        }),
        Err(Error::ChainNotAvailable)
    );
    // NEXT all the way round: after the wrap, slot 0 is no longer available under the toggled
    // counter, so the walk stops there (the slot bound catches a driver racing the walk).
    assert_eq!(
        packed_pop(plain, |r| {
            for slot in 0..N {
                packed_desc(r, slot, data(0), 4, 0, avail | nx);
            }
        }),
        Err(Error::ChainNotAvailable)
    );
    assert_eq!(
        packed_pop(plain, |r| packed_desc(
            r,
            0,
            BUS + MEMORY_LEN as u64,
            1,
            0,
            avail
        )),
        Err(Error::BufferOutsideGrant)
    );
    assert_eq!(
        packed_pop(plain, |r| {
            packed_desc(r, 0, data(0), 4, 0, avail | nx | packed::DESC_F_WRITE);
            packed_desc(r, 1, data(8), 4, 0, avail);
        }),
        Err(Error::DirectionOrder)
    );
    assert_eq!(
        packed_pop(plain, |r| packed_desc(
            r,
            0,
            data(0),
            16,
            0,
            avail | packed::DESC_F_INDIRECT
        )),
        Err(Error::BadIndirectTable)
    );
    assert_eq!(
        packed_pop(indirect, |r| packed_desc(
            r,
            0,
            data(0),
            20,
            0,
            avail | packed::DESC_F_INDIRECT
        )),
        Err(Error::BadIndirectTable)
    );
    assert_eq!(
        packed_pop(indirect, |r| {
            let table = slot_offset(0, 0);
            r.write_u64(table, data(64)).unwrap();
            r.write_u32(table + 8, 16).unwrap();
            r.write_u16(table + 14, packed::DESC_F_INDIRECT).unwrap();
            packed_desc(r, 0, data(0), 16, 0, avail | packed::DESC_F_INDIRECT);
        }),
        Err(Error::BadIndirectTable)
    );
    assert_eq!(
        packed_pop(indirect, |r| {
            packed_desc(
                r,
                0,
                BUS + MEMORY_LEN as u64 - 8,
                16,
                0,
                avail | packed::DESC_F_INDIRECT,
            )
        }),
        Err(Error::BufferOutsideGrant)
    );
    assert_eq!(
        packed_pop(indirect, |r| {
            packed_desc(r, 0, data(0), 4, 0, avail | nx);
            packed_desc(r, 1, data(64), 16, 0, avail | packed::DESC_F_INDIRECT);
        }),
        Err(Error::BadIndirectTable),
        "§2.8.19: no indirect descriptor in a NEXT-linked list"
    );
    assert_eq!(
        packed_pop(indirect, |r| {
            let table = slot_offset(0, 0);
            r.write_u64(table, data(64)).unwrap();
            r.write_u32(table + 8, 16).unwrap();
            r.write_u16(table + 14, packed::DESC_F_NEXT).unwrap();
            packed_desc(r, 0, data(0), 16, 0, avail | packed::DESC_F_INDIRECT);
        }),
        Err(Error::BadIndirectTable),
        "§2.8.19: only WRITE inside an indirect table"
    );
    assert_eq!(
        packed_pop(plain, |r| packed_desc(r, 0, data(0), 4, 3, avail)),
        Ok(1)
    );
}

#[test]
fn packed_driver_checks_used_descriptors() {
    let memory = memory();
    let region = memory.region(BUS);
    let layout = PackedLayout::new(N).unwrap();
    let mut driver = PackedQueue::<8>::new(region, features(&[])).unwrap();
    let used = packed::DESC_F_AVAIL | packed::DESC_F_USED | packed::DESC_F_WRITE;
    let forge = |id: u16, len: u32| {
        region.write_u32(layout.slot(0) + 8, len).unwrap();
        region.write_u16(layout.slot(0) + 12, id).unwrap();
        region.write_u16(layout.slot(0) + 14, used).unwrap();
    };
    forge(0, 0);
    assert_eq!(
        driver.poll_used(),
        Err(Error::Protocol),
        "used before anything was available"
    );
    let token = driver
        .submit(
            &[],
            &[Buffer {
                addr: data(0),
                len: 8,
            }],
        )
        .unwrap();
    forge(N, 0);
    assert_eq!(driver.poll_used(), Err(Error::BadUsedId));
    forge(token.0 ^ 1, 0);
    assert_eq!(driver.poll_used(), Err(Error::BadUsedId));
    forge(token.0, 9);
    assert_eq!(driver.poll_used(), Err(Error::BadUsedLength));
    forge(token.0, 8);
    assert_eq!(driver.poll_used().unwrap().unwrap().written, 8);
    assert_eq!(driver.free_descriptors(), 8);
    assert_eq!(driver.poll_used(), Ok(None), "slot 1 is not used");
}

#[test]
fn device_never_writes_outside_writable_buffers() {
    for format in FORMATS {
        let memory = memory();
        let region = memory.region(BUS);
        let area = GrantedArea::new(region);
        let (mut driver, mut device) = queue_pair::<8>(&memory, format, features(&[]));
        region.fill(slot_offset(0, 0), SLOT, 0xee).unwrap();
        driver
            .submit(
                &[Buffer {
                    addr: data(0),
                    len: 16,
                }],
                &[Buffer {
                    addr: data(100),
                    len: 10,
                }],
            )
            .unwrap();
        let chain = device.pop().unwrap().unwrap();
        let mut writer = chain.writer(&area);
        assert_eq!(writer.write(&[0; 11]), Err(Error::NotWritable));
        writer.write(&[0; 10]).unwrap();
        let mut bytes = vec![0u8; SLOT];
        region.read_bytes(slot_offset(0, 0), &mut bytes).unwrap();
        for (i, byte) in bytes.iter().enumerate() {
            let expected = if (100..110).contains(&i) { 0 } else { 0xee };
            assert_eq!(*byte, expected, "{format:?}: byte {i}");
        }
    }
}

#[test]
fn chains_longer_than_four_gib_are_refused() {
    for format in FORMATS {
        let memory = memory();
        let (mut driver, _) = queue_pair::<8>(&memory, format, features(&[]));
        let huge = Buffer {
            addr: data(0),
            len: u32::MAX,
        };
        assert_eq!(
            driver.submit(&[huge, huge], &[]),
            Err(Error::ChainTooLong),
            "{format:?}"
        );
        assert_eq!(driver.free_descriptors(), 8);
    }
}
