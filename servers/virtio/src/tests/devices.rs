//! Device-type formats: encodings round-trip, and the entropy and console request flows work
//! through the rings with device models built on the device side.

use super::model::*;
use crate::devices::{blk, console, entropy, net};
use crate::queue::{Buffer, GrantedArea};

#[test]
fn request_headers_round_trip() {
    let header = blk::RequestHeader {
        request_type: blk::request_type::GET_ID,
        sector: 0x0102_0304_0506_0708,
    };
    assert_eq!(header.to_bytes()[..4], 8u32.to_le_bytes());
    assert_eq!(blk::RequestHeader::from_bytes(&header.to_bytes()), header);
    let segment = blk::DiscardSegment {
        sector: 9,
        num_sectors: 3,
        flags: 1,
    };
    assert_eq!(
        blk::DiscardSegment::from_bytes(&segment.to_bytes()),
        segment
    );
    let net_header = net::Header {
        flags: net::header_flags::NEEDS_CSUM,
        gso_type: net::gso::TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
        num_buffers: 0,
    };
    let bytes = net_header.to_bytes();
    assert_eq!(&bytes[..4], &[1, 1, 54, 0]);
    assert_eq!(net::Header::from_bytes(&bytes), net_header);
    let message = console::ControlMessage {
        id: 1,
        event: console::event::PORT_OPEN,
        value: 1,
    };
    assert_eq!(
        console::ControlMessage::from_bytes(&message.to_bytes()),
        message
    );
    assert_eq!(
        console::Resize::from_bytes(&[24, 0, 80, 0]),
        console::Resize { rows: 24, cols: 80 }
    );
    assert_eq!((console::queue::rx(1), console::queue::tx(1)), (4, 5));
    assert_eq!(net::queue::control(1), 2);
}

#[test]
fn entropy_and_console_through_the_rings() {
    for format in FORMATS {
        let memory = memory();
        let region = memory.region(BUS);
        let area = GrantedArea::new(region);
        // Entropy (§5.4): one writable buffer; the device fills what it can.
        let (mut driver, mut device) = queue_pair::<4>(&memory, format, features(&[]));
        assert_eq!(entropy::REQUEST_QUEUE, 0);
        driver
            .submit(
                &[],
                &[Buffer {
                    addr: slot_address(0, 0),
                    len: 32,
                }],
            )
            .unwrap();
        let chain = device.pop().unwrap().unwrap();
        let mut rng = Rng(99);
        let random: Vec<u8> = (0..chain.writable_len())
            .map(|_| rng.next() as u8)
            .collect();
        let mut writer = chain.writer(&area);
        writer.write(&random).unwrap();
        device.push(&chain, writer.written()).unwrap();
        assert_eq!(driver.poll_used().unwrap().unwrap().written, 32);
        let mut got = [0u8; 32];
        region.read_bytes(slot_offset(0, 0), &mut got).unwrap();
        assert_eq!(&got[..], &random[..]);

        // Console (§5.3): bytes written on port 0's transmit queue come back on its receive
        // queue from an echoing device.
        // Each queue gets its own simulated memory (rings sit at offset 0 in both).
        let other = self::memory();
        let tx_area = GrantedArea::new(other.region(BUS));
        let (mut rx, mut rx_device) = queue_pair::<4>(&memory, format, features(&[]));
        let (mut tx, mut tx_device) = queue_pair::<4>(&other, format, features(&[]));
        rx.submit(
            &[],
            &[Buffer {
                addr: slot_address(1, 0),
                len: 64,
            }],
        )
        .unwrap();
        tx_area
            .memory()
            .write_bytes(slot_offset(2, 0), b"hello, partition\n")
            .unwrap();
        tx.submit(
            &[Buffer {
                addr: slot_address(2, 0),
                len: 17,
            }],
            &[],
        )
        .unwrap();
        let out = tx_device.pop().unwrap().unwrap();
        let mut text = vec![0u8; out.readable_len() as usize];
        out.reader(&tx_area).read_exact(&mut text).unwrap();
        tx_device.push(&out, 0).unwrap();
        let back = rx_device.pop().unwrap().unwrap();
        let mut writer = back.writer(&area);
        writer.write(&text).unwrap();
        rx_device.push(&back, writer.written()).unwrap();
        assert_eq!(tx.poll_used().unwrap().unwrap().written, 0);
        assert_eq!(rx.poll_used().unwrap().unwrap().written, 17);
        let mut echoed = [0u8; 17];
        region.read_bytes(slot_offset(1, 0), &mut echoed).unwrap();
        assert_eq!(&echoed, b"hello, partition\n");
    }
}
