//! What the console and entropy servers share about a client's channel: its queues (split or
//! packed, as negotiated), the ring features offered, and copies between a validated chain and
//! a buffer. The entropy server (`servers/rng`) includes this file.

use virtio::features::{Features, bits};
use virtio::packed::PackedDeviceQueue;
use virtio::queue::{Chain, DeviceQueue, GrantedArea};
use virtio::split::SplitDeviceQueue;
use virtio::transport::shmem::SharedMemoryDevice;

/// The ring features the library's device side implements, offered to every client.
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
    pub fn open<N>(device: &SharedMemoryDevice<'a, N>, q: u16) -> virtio::Result<Self>
    where
        N: virtio::transport::shmem::Notifier,
    {
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

    /// The next chain, or `None` after asking for a kick and re-checking (§2.7.10).
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
}

/// Copies the chain's device-readable bytes from `offset` into `out`; how many there were.
pub fn read_readable(
    chain: &Chain,
    area: &GrantedArea<'_>,
    offset: u64,
    out: &mut [u8],
) -> virtio::Result<usize> {
    let mut skip = offset;
    let mut done = 0;
    for segment in chain.segments().iter().filter(|s| !s.writable) {
        if done == out.len() {
            break;
        }
        let len = u64::from(segment.len);
        if skip >= len {
            skip -= len;
            continue;
        }
        let take = ((len - skip) as usize).min(out.len() - done);
        area.memory()
            .read_bytes(segment.offset + skip as usize, &mut out[done..done + take])?;
        done += take;
        skip = 0;
    }
    Ok(done)
}

/// Writes `bytes` into the chain's device-writable part from its start; fails if they do not
/// fit.
pub fn write_writable(chain: &Chain, area: &GrantedArea<'_>, bytes: &[u8]) -> virtio::Result<()> {
    let mut done = 0;
    for segment in chain.segments().iter().filter(|s| s.writable) {
        if done == bytes.len() {
            break;
        }
        let take = (segment.len as usize).min(bytes.len() - done);
        area.memory()
            .write_bytes(segment.offset, &bytes[done..done + take])?;
        done += take;
    }
    if done == bytes.len() {
        Ok(())
    } else {
        Err(virtio::Error::OutOfBounds)
    }
}
