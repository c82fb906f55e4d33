//! A client's queue in the ring format it negotiated, and the ring features every device
//! class offers.

use virtio::features::{Features, bits};
use virtio::packed::PackedDeviceQueue;
use virtio::queue::{Chain, DeviceQueue};
use virtio::split::SplitDeviceQueue;
use virtio::transport::shmem::{Notifier, SharedMemoryDevice};

/// The ring features the library's device side implements, offered to every client: EVENT_IDX
/// (§2.7.10), indirect descriptors (§2.7.5.3) and packed rings (§2.8).
pub fn ring_features() -> Features {
    Features::from_bits(&[bits::EVENT_IDX, bits::INDIRECT_DESC, bits::RING_PACKED])
}

/// A client's queue in the format it negotiated.
pub enum ClientQueue<'a> {
    /// Split virtqueue (§2.7).
    Split(SplitDeviceQueue<'a>),
    /// Packed virtqueue (§2.8).
    Packed(PackedDeviceQueue<'a>),
}

impl<'a> ClientQueue<'a> {
    /// The device side of enabled queue `q` of `device`.
    pub fn open<N: Notifier>(device: &SharedMemoryDevice<'a, N>, q: u16) -> virtio::Result<Self> {
        if device.negotiated().has(bits::RING_PACKED) {
            device.packed_queue(q).map(ClientQueue::Packed)
        } else {
            device.split_queue(q).map(ClientQueue::Split)
        }
    }

    /// The queue.
    pub fn queue(&mut self) -> &mut dyn DeviceQueue {
        match self {
            ClientQueue::Split(q) => q,
            ClientQueue::Packed(q) => q,
        }
    }

    /// The next chain, or `None` after asking for a kick and re-checking (§2.7.10: a chain
    /// made available between the empty look and the request is taken now, not after the
    /// next kick).
    pub fn next_chain(&mut self) -> virtio::Result<Option<Chain>> {
        loop {
            if let Some(chain) = self.queue().pop()? {
                return Ok(Some(chain));
            }
            if !self.queue().enable_notifications()? {
                return Ok(None);
            }
        }
    }

    /// Fills `chain` with the next chain, in place; whether there was one. With none, asks for
    /// a kick and re-checks as [`ClientQueue::next_chain`] does.
    pub fn next_chain_into(&mut self, chain: &mut Chain) -> virtio::Result<bool> {
        loop {
            if self.queue().pop_into(chain)? {
                return Ok(true);
            }
            if !self.queue().enable_notifications()? {
                return Ok(false);
            }
        }
    }
}
