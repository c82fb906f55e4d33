//! Shared test scaffolding: simulated guest memory, queue pairs of either format, and device
//! models (block, network loopback) written against the device-side API.

use crate::Result;
use crate::devices::{blk, net};
use crate::dma::{DmaRegion, OwnedDma};
use crate::features::{Features, bits};
use crate::packed::{PackedDeviceQueue, PackedLayout, PackedQueue};
use crate::queue::{Buffer, Chain, DeviceQueue, DriverQueue, GrantedArea, Token};
use crate::split::{SplitDeviceQueue, SplitLayout, SplitQueue};

/// Bus address of simulated guest memory byte 0.
pub const BUS: u64 = 0x8000_0000;
pub const RING_OFFSET: usize = 0;
pub const INDIRECT_OFFSET: usize = 0x1_0000;
pub const DATA_OFFSET: usize = 0x2_0000;
pub const MEMORY_LEN: usize = 0x6_0000;
/// Bytes of data area per request slot.
pub const SLOT: usize = 8192;
pub const INDIRECT_PER_TABLE: u16 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Split,
    Packed,
}

pub const FORMATS: [Format; 2] = [Format::Split, Format::Packed];

pub fn memory() -> OwnedDma {
    OwnedDma::new(MEMORY_LEN)
}

/// A driver queue and the device queue serving it, over the same simulated memory.
pub fn queue_pair<'a, const N: usize>(
    memory: &'a OwnedDma,
    format: Format,
    features: Features,
) -> (Box<dyn DriverQueue + 'a>, Box<dyn DeviceQueue + 'a>) {
    let region = memory.region(BUS);
    let ring = region.subregion(RING_OFFSET, INDIRECT_OFFSET).unwrap();
    let indirect = region
        .subregion(INDIRECT_OFFSET, DATA_OFFSET - INDIRECT_OFFSET)
        .unwrap();
    let area = GrantedArea::new(region);
    let with_indirect = features.has(bits::INDIRECT_DESC);
    match format {
        Format::Split => {
            let mut driver = SplitQueue::<N>::new(ring, features, false).unwrap();
            if with_indirect {
                driver = driver.with_indirect(indirect, INDIRECT_PER_TABLE).unwrap();
            }
            let device = SplitDeviceQueue::new(
                ring,
                SplitLayout::new(N as u16, false).unwrap(),
                area,
                features,
            )
            .unwrap();
            (Box::new(driver), Box::new(device))
        }
        Format::Packed => {
            let mut driver = PackedQueue::<N>::new(ring, features).unwrap();
            if with_indirect {
                driver = driver.with_indirect(indirect, INDIRECT_PER_TABLE).unwrap();
            }
            let device =
                PackedDeviceQueue::new(ring, PackedLayout::new(N as u16).unwrap(), area, features)
                    .unwrap();
            (Box::new(driver), Box::new(device))
        }
    }
}

/// Bus address of byte `offset` of request slot `slot`.
pub fn slot_address(slot: usize, offset: usize) -> u64 {
    BUS + (DATA_OFFSET + slot * SLOT + offset) as u64
}

pub fn slot_offset(slot: usize, offset: usize) -> usize {
    DATA_OFFSET + slot * SLOT + offset
}

/// Driver side of a block request in data slot `slot`: header at +0, status at +16, data at
/// +4096. Returns the token.
pub fn submit_block(
    queue: &mut dyn DriverQueue,
    memory: &DmaRegion<'_>,
    slot: usize,
    request_type: u32,
    sector: u64,
    data: Option<&[u8]>,
    read_len: u32,
) -> Result<Token> {
    let header = blk::RequestHeader {
        request_type,
        sector,
    };
    memory.write_bytes(slot_offset(slot, 0), &header.to_bytes())?;
    memory.write_u8(slot_offset(slot, 16), 0xff)?;
    let header_buffer = Buffer {
        addr: slot_address(slot, 0),
        len: 16,
    };
    let status_buffer = Buffer {
        addr: slot_address(slot, 16),
        len: 1,
    };
    let data_buffer = |len| Buffer {
        addr: slot_address(slot, 4096),
        len,
    };
    match data {
        Some(bytes) => {
            memory.write_bytes(slot_offset(slot, 4096), bytes)?;
            queue.submit(
                &[header_buffer, data_buffer(bytes.len() as u32)],
                &[status_buffer],
            )
        }
        None if read_len > 0 => {
            queue.submit(&[header_buffer], &[data_buffer(read_len), status_buffer])
        }
        None => queue.submit(&[header_buffer], &[status_buffer]),
    }
}

/// A RAM-backed block device, served through the device-side API only.
pub struct BlockModel {
    pub disk: Vec<u8>,
    pub requests: usize,
}

pub const BLOCK_ID: &[u8; 20] = b"bulkhead-test-disk-0";

impl BlockModel {
    pub fn new(sectors: usize) -> Self {
        Self {
            disk: vec![0; sectors * blk::SECTOR_SIZE as usize],
            requests: 0,
        }
    }

    /// Serves every available request; returns how many.
    pub fn serve(&mut self, queue: &mut dyn DeviceQueue, area: &GrantedArea<'_>) -> Result<usize> {
        let mut served = 0;
        while let Some(chain) = queue.pop()? {
            let written = self.handle(&chain, area)?;
            queue.push(&chain, written)?;
            served += 1;
        }
        self.requests += served;
        Ok(served)
    }

    fn handle(&mut self, chain: &Chain, area: &GrantedArea<'_>) -> Result<u32> {
        let mut reader = chain.reader(area);
        let mut writer = chain.writer(area);
        if chain.writable_len() == 0 {
            return Ok(0);
        }
        let mut header = [0u8; 16];
        if reader.read_exact(&mut header).is_err() {
            writer.write(&[blk::status::IOERR])?;
            return Ok(writer.written());
        }
        let header = blk::RequestHeader::from_bytes(&header);
        let start = header.sector.saturating_mul(blk::SECTOR_SIZE) as usize;
        let status = match header.request_type {
            blk::request_type::IN => {
                let len = (chain.writable_len() - 1) as usize;
                match self.disk.get(start..start.saturating_add(len)) {
                    Some(data) => {
                        writer.write(data)?;
                        blk::status::OK
                    }
                    None => blk::status::IOERR,
                }
            }
            blk::request_type::OUT => {
                let len = reader.remaining() as usize;
                match self.disk.get_mut(start..start.saturating_add(len)) {
                    Some(target) => {
                        reader.read_exact(target)?;
                        blk::status::OK
                    }
                    None => blk::status::IOERR,
                }
            }
            blk::request_type::FLUSH => blk::status::OK,
            blk::request_type::GET_ID => {
                writer.write(BLOCK_ID)?;
                blk::status::OK
            }
            _ => blk::status::UNSUPP,
        };
        writer.write(&[status])?;
        Ok(writer.written())
    }
}

/// A network device that loops every transmitted frame back into the next receive buffer,
/// dropping frames when no receive buffer is available (as a NIC would).
pub struct LoopbackNet {
    pub frames: usize,
    pub dropped: usize,
}

impl LoopbackNet {
    /// Moves every transmitted frame to `rx`; returns how many were delivered.
    pub fn serve(
        &mut self,
        tx: &mut dyn DeviceQueue,
        rx: &mut dyn DeviceQueue,
        area: &GrantedArea<'_>,
    ) -> Result<usize> {
        let mut delivered = 0;
        while let Some(tx_chain) = tx.pop()? {
            let mut frame = vec![0u8; tx_chain.readable_len() as usize];
            tx_chain.reader(area).read_exact(&mut frame)?;
            match rx.pop()? {
                Some(rx_chain) if frame.len() >= net::Header::SIZE => {
                    let mut header =
                        net::Header::from_bytes(frame[..net::Header::SIZE].try_into().unwrap());
                    header.num_buffers = 1;
                    let mut writer = rx_chain.writer(area);
                    writer.write(&header.to_bytes())?;
                    writer.write(&frame[net::Header::SIZE..])?;
                    rx.push(&rx_chain, writer.written())?;
                    delivered += 1;
                }
                Some(rx_chain) => rx.push(&rx_chain, 0)?,
                None => self.dropped += 1,
            }
            tx.push(&tx_chain, 0)?;
        }
        self.frames += delivered;
        Ok(delivered)
    }
}

/// Small deterministic PRNG (xorshift64*) for seeded pseudo-random tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

pub fn features(list: &[u32]) -> Features {
    Features::from_bits(list).with(bits::VERSION_1)
}
