//! Block device (§5.2).

/// Feature bits (§5.2.3).
pub mod features {
    /// Maximum segment size is in `size_max`.
    pub const SIZE_MAX: u32 = 1;
    /// Maximum segments per request is in `seg_max`.
    pub const SEG_MAX: u32 = 2;
    /// Legacy disk geometry is in `geometry`.
    pub const GEOMETRY: u32 = 4;
    /// Read-only device.
    pub const RO: u32 = 5;
    /// Block size is in `blk_size`.
    pub const BLK_SIZE: u32 = 6;
    /// Cache flush command.
    pub const FLUSH: u32 = 9;
    /// Topology information is in `topology`.
    pub const TOPOLOGY: u32 = 10;
    /// Writeback/writethrough cache mode is configurable.
    pub const CONFIG_WCE: u32 = 11;
    /// Multiple request queues (`num_queues`).
    pub const MQ: u32 = 12;
    /// Discard command.
    pub const DISCARD: u32 = 13;
    /// Write zeroes command.
    pub const WRITE_ZEROES: u32 = 14;
    /// Device lifetime information.
    pub const LIFETIME: u32 = 15;
    /// Secure erase command.
    pub const SECURE_ERASE: u32 = 16;
    /// Zoned block device (1.4 §5.2.3).
    pub const ZONED: u32 = 17;
    /// Legacy: request barriers.
    pub const BARRIER: u32 = 0;
    /// Legacy: SCSI packet commands.
    pub const SCSI: u32 = 7;
}

/// Configuration layout (§5.2.4, `struct virtio_blk_config`): byte offsets.
pub mod config {
    /// le64: capacity in 512-byte sectors.
    pub const CAPACITY: usize = 0;
    /// le32: maximum segment size.
    pub const SIZE_MAX: usize = 8;
    /// le32: maximum segments per request.
    pub const SEG_MAX: usize = 12;
    /// le16 cylinders, u8 heads, u8 sectors.
    pub const GEOMETRY: usize = 16;
    /// le32: block size.
    pub const BLK_SIZE: usize = 20;
    /// u8 physical_block_exp, u8 alignment_offset, le16 min_io_size, le32 opt_io_size.
    pub const TOPOLOGY: usize = 24;
    /// u8: writeback cache mode.
    pub const WRITEBACK: usize = 32;
    /// le16: number of request queues.
    pub const NUM_QUEUES: usize = 34;
    /// le32: maximum discard sectors.
    pub const MAX_DISCARD_SECTORS: usize = 36;
    /// le32: maximum discard segments.
    pub const MAX_DISCARD_SEG: usize = 40;
    /// le32: discard sector alignment.
    pub const DISCARD_SECTOR_ALIGNMENT: usize = 44;
    /// le32: maximum write-zeroes sectors.
    pub const MAX_WRITE_ZEROES_SECTORS: usize = 48;
    /// le32: maximum write-zeroes segments.
    pub const MAX_WRITE_ZEROES_SEG: usize = 52;
    /// u8: write zeroes may unmap.
    pub const WRITE_ZEROES_MAY_UNMAP: usize = 56;
    /// le32: maximum secure-erase sectors.
    pub const MAX_SECURE_ERASE_SECTORS: usize = 60;
    /// le32: maximum secure-erase segments.
    pub const MAX_SECURE_ERASE_SEG: usize = 64;
    /// le32: secure erase sector alignment.
    pub const SECURE_ERASE_SECTOR_ALIGNMENT: usize = 68;
    /// Size of the 1.2 layout (ends with the secure-erase fields).
    pub const SIZE: usize = 72;
    /// 1.4: zoned characteristics (le32 zone_sectors, max_open_zones, max_active_zones,
    /// max_append_sectors, write_granularity; u8 model).
    pub const ZONED: usize = 72;
    /// 1.4: size of the layout including the zoned characteristics.
    pub const SIZE_WITH_ZONED: usize = 96;
}

/// Sector size for `sector` fields, whatever the block size (§5.2.6).
pub const SECTOR_SIZE: u64 = 512;
/// Bytes returned by [`request_type::GET_ID`].
pub const ID_BYTES: usize = 20;

/// Request types (§5.2.6).
pub mod request_type {
    /// Read.
    pub const IN: u32 = 0;
    /// Write.
    pub const OUT: u32 = 1;
    /// Flush the write cache.
    pub const FLUSH: u32 = 4;
    /// Device ID string.
    pub const GET_ID: u32 = 8;
    /// Lifetime information.
    pub const GET_LIFETIME: u32 = 10;
    /// Discard.
    pub const DISCARD: u32 = 11;
    /// Write zeroes.
    pub const WRITE_ZEROES: u32 = 13;
    /// Secure erase.
    pub const SECURE_ERASE: u32 = 14;
}

/// Request status byte, the last byte of the device-writable part (§5.2.6).
pub mod status {
    /// Success.
    pub const OK: u8 = 0;
    /// Device or driver error.
    pub const IOERR: u8 = 1;
    /// Unsupported request.
    pub const UNSUPP: u8 = 2;
}

/// The device-readable header of every request (§5.2.6): `le32 type; le32 reserved;
/// le64 sector`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    /// One of [`request_type`].
    pub request_type: u32,
    /// First sector, in 512-byte units.
    pub sector: u64,
}

impl RequestHeader {
    /// Encoded size.
    pub const SIZE: usize = 16;

    /// Encodes the header.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut bytes = [0u8; Self::SIZE];
        bytes[0..4].copy_from_slice(&self.request_type.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.sector.to_le_bytes());
        bytes
    }

    /// Decodes a header.
    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        Self {
            request_type: super::le32(bytes, 0).unwrap_or(u32::MAX),
            sector: super::le64(bytes, 8).unwrap_or(0),
        }
    }
}

/// One segment of a discard, write-zeroes or secure-erase request (§5.2.6):
/// `le64 sector; le32 num_sectors; le32 flags`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscardSegment {
    /// First sector.
    pub sector: u64,
    /// Number of sectors.
    pub num_sectors: u32,
    /// Bit 0: unmap (write zeroes only).
    pub flags: u32,
}

impl DiscardSegment {
    /// Encoded size.
    pub const SIZE: usize = 16;

    /// Encodes the segment.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut bytes = [0u8; Self::SIZE];
        bytes[0..8].copy_from_slice(&self.sector.to_le_bytes());
        bytes[8..12].copy_from_slice(&self.num_sectors.to_le_bytes());
        bytes[12..16].copy_from_slice(&self.flags.to_le_bytes());
        bytes
    }

    /// Decodes a segment.
    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        Self {
            sector: super::le64(bytes, 0).unwrap_or(0),
            num_sectors: super::le32(bytes, 8).unwrap_or(0),
            flags: super::le32(bytes, 12).unwrap_or(0),
        }
    }
}
