//! Socket device (§5.10).

/// Feature bits (§5.10.3).
pub mod features {
    /// Stream sockets.
    pub const STREAM: u32 = 0;
    /// Sequential packet sockets.
    pub const SEQPACKET: u32 = 1;
}

/// Configuration layout (§5.10.4): `le64 guest_cid` at offset 0.
pub mod config {
    /// le64: the guest's context ID.
    pub const GUEST_CID: usize = 0;
}

/// Queue indexes (§5.10.2).
pub mod queue {
    /// rx.
    pub const RX: u16 = 0;
    /// tx.
    pub const TX: u16 = 1;
    /// event.
    pub const EVENT: u16 = 2;
}

/// Size of `struct virtio_vsock_hdr` (§5.10.6): src_cid, dst_cid, src_port, dst_port, len,
/// type, op, flags, buf_alloc, fwd_cnt.
pub const HEADER_SIZE: usize = 44;
