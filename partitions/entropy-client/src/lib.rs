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
use virtio::features::Features;
use virtio::queue::{Buffer, DriverQueue, Token};
use virtio::transport::shmem::Notifier;
use virtio_session::{Class, Session};

/// Largest request.
pub const BUFFER: usize = 4096;
const QUEUE: u16 = entropy::REQUEST_QUEUE;

virtio_session::client_error! {
    /// Why a read failed.
    pub enum EntropyError {
        /// The channel is not an entropy device.
        wrong_device: NotEntropy,
        /// No answer within the notifier's waits; the request stays posted.
        Timeout,
    }
}

/// An entropy device over a shared-memory channel, with a split queue of `Q` entries.
#[derive(Debug)]
pub struct EntropyClient<'a, N: Notifier + Clone, const Q: usize = 4> {
    session: Session<'a, N, Q, 1>,
    in_flight: Option<Token>,
}

impl<'a, N: Notifier + Clone, const Q: usize> EntropyClient<'a, N, Q> {
    /// What the driver asks of the channel: no features, room for one request.
    const CLASS: Class = Class {
        device_type: id::ENTROPY,
        features: Features(0),
        data_bytes: BUFFER,
    };

    /// Attaches to the channel in `region` and initialises the device (§3.1.1). `max_waits`
    /// bounds the empty notifier waits of one [`EntropyClient::read`].
    pub fn attach(
        region: DmaRegion<'a>,
        notifier: N,
        max_waits: u32,
    ) -> Result<Self, EntropyError> {
        Ok(Self {
            session: Session::attach(region, notifier, Self::CLASS, max_waits)?,
            in_flight: None,
        })
    }

    /// Attaches afresh after [`EntropyError::Reset`] or [`EntropyError::NeedsReset`].
    pub fn reconnect(&mut self) -> Result<(), EntropyError> {
        self.session.reconnect()?;
        self.in_flight = None;
        Ok(())
    }

    /// Whether the device is still live.
    pub fn check_device(&mut self) -> Result<(), EntropyError> {
        Ok(self.session.check_device()?)
    }

    /// Fills the start of `out` (up to [`BUFFER`] bytes) with random bytes; how many.
    pub fn read(&mut self, out: &mut [u8]) -> Result<usize, EntropyError> {
        let len = out.len().min(BUFFER);
        if len == 0 {
            return Ok(0);
        }
        let data = self.session.data_area();
        if self.in_flight.is_none() {
            let buffer = Buffer {
                addr: data.bus_address(0),
                len: len as u32,
            };
            self.in_flight = Some(self.session.queue(QUEUE)?.submit(&[], &[buffer])?);
            self.session.kick(QUEUE)?;
        }
        let mut misses = 0;
        loop {
            let posted = core::slice::from_mut(&mut self.in_flight);
            if let Some((_, c)) = self.session.take_used(QUEUE, posted)? {
                // The queue checked `written` against the buffer; a request posted by an
                // earlier, longer call may have more than `out` holds.
                let n = (c.written as usize).min(len);
                data.read_bytes(0, &mut out[..n])?;
                return Ok(n);
            }
            self.session.wait_used(QUEUE, &mut misses)?;
        }
    }
}
