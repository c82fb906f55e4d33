//! The shared-memory view: bounds, alignment, and byte copies at every alignment.

use crate::Error;
use crate::dma::OwnedDma;

#[test]
fn byte_copies_match_at_every_alignment() {
    let memory = OwnedDma::new(256);
    let region = memory.region(0x1000);
    for offset in 0..17 {
        for len in [0, 1, 7, 8, 9, 15, 16, 17, 40] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 + offset) as u8).collect();
            region.fill(0, 128, 0xaa).unwrap();
            region.write_bytes(offset, &data).unwrap();
            let mut all = vec![0u8; 128];
            region.read_bytes(0, &mut all).unwrap();
            assert!(
                all[..offset].iter().all(|&b| b == 0xaa),
                "before {offset}+{len}"
            );
            assert_eq!(&all[offset..offset + len], &data[..], "{offset}+{len}");
            assert!(
                all[offset + len..].iter().all(|&b| b == 0xaa),
                "after {offset}+{len}"
            );
            let mut back = vec![0u8; len];
            region.read_bytes(offset, &mut back).unwrap();
            assert_eq!(back, data);
            region.fill(offset, len, 0x55).unwrap();
            region.read_bytes(0, &mut all).unwrap();
            assert!(all[offset..offset + len].iter().all(|&b| b == 0x55));
            assert!(all[offset + len..].iter().all(|&b| b == 0xaa));
        }
    }
}

#[test]
fn region_to_region_copies_match_at_every_alignment() {
    let (a, b) = (OwnedDma::new(512), OwnedDma::new(512));
    let (src, dst) = (a.region(0), b.region(0));
    let data: Vec<u8> = (0..512).map(|i| (i * 7 + 3) as u8).collect();
    src.write_bytes(0, &data).unwrap();
    for from in 0..10 {
        for to in 0..10 {
            for len in [0, 1, 7, 8, 9, 63, 64, 65, 200, 300] {
                dst.fill(0, 512, 0xaa).unwrap();
                dst.copy_from_region(to, &src, from, len).unwrap();
                let mut all = vec![0u8; 512];
                dst.read_bytes(0, &mut all).unwrap();
                assert!(all[..to].iter().all(|&x| x == 0xaa), "{from}->{to}+{len}");
                assert_eq!(
                    &all[to..to + len],
                    &data[from..from + len],
                    "{from}->{to}+{len}"
                );
                assert!(
                    all[to + len..].iter().all(|&x| x == 0xaa),
                    "{from}->{to}+{len}"
                );
            }
        }
    }
    assert_eq!(
        dst.copy_from_region(500, &src, 0, 13),
        Err(Error::OutOfBounds)
    );
    assert_eq!(
        dst.copy_from_region(0, &src, usize::MAX, 2),
        Err(Error::OutOfBounds)
    );
}

#[test]
fn accesses_are_bounded_and_aligned() {
    let memory = OwnedDma::new(64);
    let region = memory.region(0x1000);
    assert_eq!(region.read_u32(62), Err(Error::OutOfBounds));
    assert_eq!(region.read_u16(usize::MAX), Err(Error::OutOfBounds));
    assert_eq!(region.read_u32(2), Err(Error::Misaligned));
    assert_eq!(region.write_u64(4, 1), Err(Error::Misaligned));
    assert_eq!(region.read_bytes(60, &mut [0; 5]), Err(Error::OutOfBounds));
    assert_eq!(
        region.write_bytes(usize::MAX, &[1]),
        Err(Error::OutOfBounds)
    );
    assert_eq!(region.subregion(32, 33).err(), Some(Error::OutOfBounds));
    let sub = region.subregion(16, 16).unwrap();
    assert_eq!(sub.bus_address(4), 0x1014);
    assert_eq!(sub.rebased(0).bus_address(4), 4);
    sub.write_u64(8, 0x0102_0304_0506_0708).unwrap();
    assert_eq!(region.read_u64(24).unwrap(), 0x0102_0304_0506_0708);
    assert_eq!(region.read_u8(24).unwrap(), 0x08, "little-endian in memory");
    assert_eq!(region.fetch_or_u32(0, 0b100).unwrap(), 0);
    assert_eq!(region.swap_u32(0, 0).unwrap(), 0b100);
}
