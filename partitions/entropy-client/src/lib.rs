//! A virtio-rng (entropy, §5.4) driver for client partitions, over Bulkhead's inter-partition
//! VirtIO transport (served by `servers/rng`).
//!
//! One request at a time: [`EntropyClient::read`] posts a device-writable buffer of up to
//! [`BUFFER`] bytes and waits for the device to fill some of it; the used length says how many
//! bytes are random (§5.4.6: at least one, possibly fewer than asked). A server that
//! rate-limits this client answers later or with fewer bytes; a wait that runs out
//! ([`EntropyError::Timeout`]) leaves the request posted, and the next `read` waits for it.
#![no_std]
#![deny(unsafe_code)]

use virtio::devices::{entropy, id};
use virtio::dma::DmaRegion;
use virtio::features::{Features, status};
use virtio::queue::{Buffer, DriverQueue, Token};
use virtio::split::SplitQueue;
use virtio::transport::shmem::{Notifier, SharedMemoryTransport};
use virtio::transport::{Transport, initialize};

/// Largest request.
pub const BUFFER: usize = 4096;

/// Why a read failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntropyError {
    /// The server has not laid out the channel (yet).
    NotReady,
    /// The channel is not an entropy device.
    NotEntropy,
    /// The device was reset (the server restarted): reconnect.
    Reset,
    /// The server declared the channel broken (DEVICE_NEEDS_RESET): reconnect.
    NeedsReset,
    /// No answer within the notifier's waits; the request stays posted.
    Timeout,
    /// The transport or the queue failed.
    Transport(virtio::Error),
}

impl From<virtio::Error> for EntropyError {
    fn from(error: virtio::Error) -> Self {
        match error {
            virtio::Error::NoDevice => EntropyError::NotReady,
            virtio::Error::DeviceNeedsReset => EntropyError::NeedsReset,
            virtio::Error::Timeout => EntropyError::Timeout,
            other => EntropyError::Transport(other),
        }
    }
}

/// An entropy device over a shared-memory channel, with a split queue of `Q` entries.
#[derive(Debug)]
pub struct EntropyClient<'a, N: Notifier + Clone, const Q: usize = 4> {
    region: DmaRegion<'a>,
    template: N,
    max_waits: u32,
    transport: SharedMemoryTransport<'a, N>,
    queue: SplitQueue<'a, Q>,
    data: DmaRegion<'a>,
    in_flight: Option<Token>,
}

impl<'a, N: Notifier + Clone, const Q: usize> EntropyClient<'a, N, Q> {
    /// Attaches to the channel in `region` and initialises the device (§3.1.1). `max_waits`
    /// bounds the empty notifier waits of one [`EntropyClient::read`].
    pub fn attach(
        region: DmaRegion<'a>,
        notifier: N,
        max_waits: u32,
    ) -> Result<Self, EntropyError> {
        let mut transport = SharedMemoryTransport::new(region, notifier.clone())?;
        if transport.device_type() != id::ENTROPY {
            return Err(EntropyError::NotEntropy);
        }
        let ring = transport.ring_area();
        let data = transport.data_area();
        if data.len() < BUFFER {
            return Err(EntropyError::Transport(virtio::Error::OutOfBounds));
        }
        let mut queue = None;
        initialize(&mut transport, Features(0), |t, negotiated| {
            let q = SplitQueue::<Q>::new(ring, negotiated, false)?;
            t.enable_queue(entropy::REQUEST_QUEUE, q.size(), q.addresses())?;
            queue = Some(q);
            Ok(())
        })?;
        let queue = queue.ok_or(EntropyError::Transport(virtio::Error::QueueUnavailable))?;
        Ok(Self {
            region,
            template: notifier,
            max_waits,
            transport,
            queue,
            data,
            in_flight: None,
        })
    }

    /// Attaches afresh after [`EntropyError::Reset`] or [`EntropyError::NeedsReset`].
    pub fn reconnect(&mut self) -> Result<(), EntropyError> {
        *self = Self::attach(self.region, self.template.clone(), self.max_waits)?;
        Ok(())
    }

    /// Whether the device is still live.
    pub fn check_device(&mut self) -> Result<(), EntropyError> {
        let s = self.transport.status();
        if s & status::DEVICE_NEEDS_RESET != 0 {
            Err(EntropyError::NeedsReset)
        } else if s & status::DRIVER_OK == 0 || s & status::FAILED != 0 {
            Err(EntropyError::Reset)
        } else {
            Ok(())
        }
    }

    /// Fills the start of `out` (up to [`BUFFER`] bytes) with random bytes; how many.
    pub fn read(&mut self, out: &mut [u8]) -> Result<usize, EntropyError> {
        let len = out.len().min(BUFFER);
        if len == 0 {
            return Ok(0);
        }
        if self.in_flight.is_none() {
            let buffer = Buffer {
                addr: self.data.bus_address(0),
                len: len as u32,
            };
            self.in_flight = Some(self.queue.submit(&[], &[buffer])?);
            if self.queue.should_notify()? {
                self.transport.notify(entropy::REQUEST_QUEUE)?;
            }
        }
        let mut misses = 0;
        loop {
            if let Some(c) = self.queue.poll_used()? {
                if Some(c.token) != self.in_flight {
                    return Err(EntropyError::Transport(virtio::Error::BadUsedId));
                }
                self.in_flight = None;
                // The queue checked `written` against the buffer; a request posted by an
                // earlier, longer call may have more than `out` holds.
                let n = (c.written as usize).min(len);
                self.data.read_bytes(0, &mut out[..n])?;
                return Ok(n);
            }
            self.check_device()?;
            if self.queue.enable_interrupts()? {
                continue;
            }
            if self.transport.notifier().wait() {
                self.transport.ack_interrupt();
                misses = 0;
            } else {
                misses += 1;
                if misses >= self.max_waits {
                    return Err(EntropyError::Timeout);
                }
            }
        }
    }
}
