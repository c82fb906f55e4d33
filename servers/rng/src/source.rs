//! The real entropy device behind the server: the [`Source`] trait the engine drives, and
//! [`VirtioRng`], a virtio-rng driver (§5.4) that keeps [`BUFFERS`] buffers of the server's
//! DMA region posted on the device's requestq and hands out what the device wrote into them.
//! Each byte is handed out once.

use ioserver::DeviceInterrupts;
use virtio::devices::entropy;
use virtio::dma::DmaRegion;
use virtio::features::Features;
use virtio::queue::{Buffer, DriverQueue, Outstanding};
use virtio::split::SplitQueue;
use virtio::transport::{Transport, initialize};

/// Random bytes, as the engine sees them.
pub trait Source: DeviceInterrupts {
    /// Bytes ready to be handed out now.
    fn available(&self) -> usize;
    /// Takes up to `out.len()` bytes; how many.
    fn take(&mut self, out: &mut [u8]) -> usize;
    /// Does the device's work (completions, re-posting buffers); whether anything happened.
    fn poll(&mut self) -> bool;
}

/// Buffers kept with the device.
pub const BUFFERS: usize = 8;
/// Bytes per buffer.
pub const BUFFER_LEN: usize = 512;
/// Entries of the device's queue: QEMU's virtio-rng has a queue of 8 (legacy: exactly 8), one
/// per buffer.
pub const QUEUE_SIZE: usize = 8;
/// Ring memory the queue needs (with room for a legacy layout).
pub const RING_BYTES: usize = 0x2000;

/// A virtio-rng device.
pub struct VirtioRng<'a, T> {
    transport: T,
    queue: SplitQueue<'a, QUEUE_SIZE>,
    memory: DmaRegion<'a>,
    /// Which buffer each chain on the device is (and whether the device broke its ring).
    posted: Outstanding<QUEUE_SIZE>,
    /// Filled buffers, oldest first: (buffer, bytes, bytes taken).
    filled: [(usize, usize, usize); BUFFERS],
    filled_count: usize,
    /// Bytes the device delivered so far.
    pub delivered: u64,
}

impl<T> core::fmt::Debug for VirtioRng<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VirtioRng")
            .field("delivered", &self.delivered)
            .finish()
    }
}

impl<'a, T: Transport> VirtioRng<'a, T> {
    /// Initialises the device (§3.1.1; no features, §5.4.3) with its one queue in `ring` and
    /// [`BUFFERS`] × [`BUFFER_LEN`] bytes of buffers in `memory`; posts every buffer.
    pub fn new(
        mut transport: T,
        ring: DmaRegion<'a>,
        memory: DmaRegion<'a>,
        after_enable: impl FnOnce(&mut T) -> virtio::Result<()>,
    ) -> virtio::Result<Self> {
        if memory.len() < BUFFERS * BUFFER_LEN {
            return Err(virtio::Error::OutOfBounds);
        }
        let mut queue = None;
        initialize(&mut transport, Features(0), |t, negotiated| {
            let q = SplitQueue::<QUEUE_SIZE>::new(ring, negotiated, t.is_legacy())?;
            t.enable_queue(entropy::REQUEST_QUEUE, q.size(), q.addresses())?;
            queue = Some(q);
            after_enable(t)
        })?;
        let queue = queue.ok_or(virtio::Error::QueueUnavailable)?;
        let mut this = Self {
            transport,
            queue,
            memory,
            posted: Outstanding::new(),
            filled: [(0, 0, 0); BUFFERS],
            filled_count: 0,
            delivered: 0,
        };
        for b in 0..BUFFERS {
            this.post(b)?;
        }
        this.kick();
        Ok(this)
    }

    fn post(&mut self, b: usize) -> virtio::Result<()> {
        let buffer = Buffer {
            addr: self.memory.bus_address(b * BUFFER_LEN),
            len: BUFFER_LEN as u32,
        };
        self.posted.submit(&mut self.queue, b, &[], &[buffer])?;
        Ok(())
    }

    fn kick(&mut self) {
        if matches!(self.queue.should_notify(), Ok(true)) {
            let _ = self.transport.notify(entropy::REQUEST_QUEUE);
        }
    }
}

impl<T: Transport> Source for VirtioRng<'_, T> {
    fn available(&self) -> usize {
        self.filled[..self.filled_count]
            .iter()
            .map(|&(_, len, taken)| len - taken)
            .sum()
    }

    fn take(&mut self, out: &mut [u8]) -> usize {
        let mut done = 0;
        let mut reposted = false;
        while self.filled_count > 0 && done < out.len() {
            let (b, len, taken) = self.filled[0];
            let n = (len - taken).min(out.len() - done);
            if self
                .memory
                .read_bytes(b * BUFFER_LEN + taken, &mut out[done..done + n])
                .is_err()
            {
                break;
            }
            done += n;
            if taken + n < len {
                self.filled[0].2 += n;
                continue;
            }
            self.filled.copy_within(1..self.filled_count, 0);
            self.filled_count -= 1;
            // Used up: scrub it (no byte is handed out twice) and give it back to the device.
            let _ = self.memory.fill(b * BUFFER_LEN, BUFFER_LEN, 0);
            if self.post(b).is_err() {
                self.posted.set_broken();
            }
            reposted = true;
        }
        if reposted {
            self.kick();
        }
        done
    }

    fn poll(&mut self) -> bool {
        let mut busy = false;
        // A device that breaks the ring protocol is not trusted further.
        while let Some((b, c)) = self.posted.next(&mut self.queue) {
            busy = true;
            let len = (c.written as usize).min(BUFFER_LEN);
            if len == 0 {
                // §5.4.6 has the device write at least one byte; re-post an empty buffer.
                if self.post(b).is_ok() {
                    self.kick();
                }
                continue;
            }
            self.delivered += len as u64;
            self.filled[self.filled_count] = (b, len, 0);
            self.filled_count += 1;
        }
        busy
    }
}

impl<T: Transport> DeviceInterrupts for VirtioRng<'_, T> {
    fn ack_interrupt(&mut self) {
        self.transport.ack_interrupt();
    }
}
