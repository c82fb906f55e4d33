//! Network device (§5.1).

/// Feature bits (§5.1.3).
pub mod features {
    /// Device handles packets with partial checksum.
    pub const CSUM: u32 = 0;
    /// Driver handles packets with partial checksum.
    pub const GUEST_CSUM: u32 = 1;
    /// Control channel offload reconfiguration.
    pub const CTRL_GUEST_OFFLOADS: u32 = 2;
    /// Maximum MTU is in `mtu`.
    pub const MTU: u32 = 3;
    /// Device has a MAC address in `mac`.
    pub const MAC: u32 = 5;
    /// Driver can receive TSOv4.
    pub const GUEST_TSO4: u32 = 7;
    /// Driver can receive TSOv6.
    pub const GUEST_TSO6: u32 = 8;
    /// Driver can receive TSO with ECN.
    pub const GUEST_ECN: u32 = 9;
    /// Driver can receive UFO.
    pub const GUEST_UFO: u32 = 10;
    /// Device can receive TSOv4.
    pub const HOST_TSO4: u32 = 11;
    /// Device can receive TSOv6.
    pub const HOST_TSO6: u32 = 12;
    /// Device can receive TSO with ECN.
    pub const HOST_ECN: u32 = 13;
    /// Device can receive UFO.
    pub const HOST_UFO: u32 = 14;
    /// Driver can merge receive buffers.
    pub const MRG_RXBUF: u32 = 15;
    /// `status` is available.
    pub const STATUS: u32 = 16;
    /// Control channel is available.
    pub const CTRL_VQ: u32 = 17;
    /// Control channel RX mode support.
    pub const CTRL_RX: u32 = 18;
    /// Control channel VLAN filtering.
    pub const CTRL_VLAN: u32 = 19;
    /// Extra RX mode control.
    pub const CTRL_RX_EXTRA: u32 = 20;
    /// Driver can send gratuitous packets.
    pub const GUEST_ANNOUNCE: u32 = 21;
    /// Multiqueue with automatic receive steering.
    pub const MQ: u32 = 22;
    /// Set MAC address through the control channel.
    pub const CTRL_MAC_ADDR: u32 = 23;
    /// Notification coalescing per queue (1.3).
    pub const VQ_NOTF_COAL: u32 = 52;
    /// Notification coalescing.
    pub const NOTF_COAL: u32 = 53;
    /// Driver can receive USOv4.
    pub const GUEST_USO4: u32 = 54;
    /// Driver can receive USOv6.
    pub const GUEST_USO6: u32 = 55;
    /// Device can receive USO.
    pub const HOST_USO: u32 = 56;
    /// Device reports a hash per packet.
    pub const HASH_REPORT: u32 = 57;
    /// Driver provides the exact header length.
    pub const GUEST_HDRLEN: u32 = 59;
    /// Receive side scaling.
    pub const RSS: u32 = 60;
    /// Extended coalescing info.
    pub const RSC_EXT: u32 = 61;
    /// Failover standby.
    pub const STANDBY: u32 = 62;
    /// Speed and duplex are in the configuration.
    pub const SPEED_DUPLEX: u32 = 63;
}

/// Configuration layout (§5.1.4, `struct virtio_net_config`): byte offsets.
pub mod config {
    /// `u8[6]`: MAC address.
    pub const MAC: usize = 0;
    /// le16: link status ([`super::link_status`]).
    pub const STATUS: usize = 6;
    /// le16: maximum number of queue pairs.
    pub const MAX_VIRTQUEUE_PAIRS: usize = 8;
    /// le16: MTU.
    pub const MTU: usize = 10;
    /// le32: speed in Mbit/s.
    pub const SPEED: usize = 12;
    /// u8: duplex.
    pub const DUPLEX: usize = 16;
    /// u8: maximum RSS key size.
    pub const RSS_MAX_KEY_SIZE: usize = 17;
    /// le16: maximum RSS indirection table length.
    pub const RSS_MAX_INDIRECTION_TABLE_LENGTH: usize = 18;
    /// le32: supported hash types.
    pub const SUPPORTED_HASH_TYPES: usize = 20;
    /// Size of the layout.
    pub const SIZE: usize = 24;
}

/// Bits of the `status` field (§5.1.4).
pub mod link_status {
    /// Link is up.
    pub const LINK_UP: u16 = 1;
    /// Driver should announce itself.
    pub const ANNOUNCE: u16 = 2;
}

/// Queue indexes without multiqueue (§5.1.2).
pub mod queue {
    /// receiveq1.
    pub const RX: u16 = 0;
    /// transmitq1.
    pub const TX: u16 = 1;
    /// The control queue index when `max_virtqueue_pairs` is `pairs`: after all pairs.
    pub const fn control(pairs: u16) -> u16 {
        pairs * 2
    }
}

/// `flags` bits of the header (§5.1.6).
pub mod header_flags {
    /// The device must checksum from `csum_start` at `csum_offset`.
    pub const NEEDS_CSUM: u8 = 1;
    /// The checksum was validated.
    pub const DATA_VALID: u8 = 2;
    /// `csum_start`/`csum_offset` carry coalescing info.
    pub const RSC_INFO: u8 = 4;
}

/// `gso_type` values (§5.1.6).
pub mod gso {
    /// No segmentation.
    pub const NONE: u8 = 0;
    /// TCPv4 segmentation.
    pub const TCPV4: u8 = 1;
    /// UDP fragmentation.
    pub const UDP: u8 = 3;
    /// TCPv6 segmentation.
    pub const TCPV6: u8 = 4;
    /// UDP segmentation.
    pub const UDP_L4: u8 = 5;
    /// ECN bit.
    pub const ECN: u8 = 0x80;
}

/// The header before every packet on the receive and transmit queues (§5.1.6,
/// `struct virtio_net_hdr`). With VERSION_1 it is always 12 bytes (`num_buffers` included),
/// 20 with HASH_REPORT.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    /// [`header_flags`].
    pub flags: u8,
    /// [`gso`].
    pub gso_type: u8,
    /// Length of the headers to copy for each segment.
    pub hdr_len: u16,
    /// Segment size.
    pub gso_size: u16,
    /// Checksum start.
    pub csum_start: u16,
    /// Checksum offset from `csum_start`.
    pub csum_offset: u16,
    /// Receive buffers merged (MRG_RXBUF); 1 otherwise on receive, 0 on transmit.
    pub num_buffers: u16,
}

impl Header {
    /// Encoded size without HASH_REPORT.
    pub const SIZE: usize = 12;
    /// Encoded size with HASH_REPORT (`le32 hash_value; le16 hash_report; le16 padding`).
    pub const SIZE_WITH_HASH: usize = 20;

    /// Encodes the header.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut bytes = [0u8; Self::SIZE];
        bytes[0] = self.flags;
        bytes[1] = self.gso_type;
        for (i, field) in [
            self.hdr_len,
            self.gso_size,
            self.csum_start,
            self.csum_offset,
            self.num_buffers,
        ]
        .iter()
        .enumerate()
        {
            bytes[2 + 2 * i..4 + 2 * i].copy_from_slice(&field.to_le_bytes());
        }
        bytes
    }

    /// Decodes a header.
    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        let field = |i: usize| super::le16(bytes, 2 + 2 * i).unwrap_or(0);
        Self {
            flags: bytes[0],
            gso_type: bytes[1],
            hdr_len: field(0),
            gso_size: field(1),
            csum_start: field(2),
            csum_offset: field(3),
            num_buffers: field(4),
        }
    }
}

/// Control queue classes and commands (§5.1.6.5): header `u8 class; u8 command`, then
/// command data, then a device-writable `u8 ack`.
pub mod ctrl {
    /// Acknowledgement: success.
    pub const OK: u8 = 0;
    /// Acknowledgement: failure.
    pub const ERR: u8 = 1;
    /// Receive filtering class.
    pub const CLASS_RX: u8 = 0;
    /// MAC filtering class.
    pub const CLASS_MAC: u8 = 1;
    /// VLAN filtering class.
    pub const CLASS_VLAN: u8 = 2;
    /// Announcement class.
    pub const CLASS_ANNOUNCE: u8 = 3;
    /// Multiqueue class.
    pub const CLASS_MQ: u8 = 4;
    /// Offload class.
    pub const CLASS_GUEST_OFFLOADS: u8 = 5;
    /// Notification coalescing class.
    pub const CLASS_NOTF_COAL: u8 = 6;
}
