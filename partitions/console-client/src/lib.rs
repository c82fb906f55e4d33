//! A virtio-console driver (§5.3) for client partitions, over Bulkhead's inter-partition VirtIO
//! transport (served by `servers/console`). Port 0 only: no MULTIPORT, so no control queues;
//! queue 0 is the receiveq (host input), queue 1 the transmitq (output).
//!
//! The data area holds [`RX_BUFFERS`] receive buffers, kept posted, and [`TX_BUFFERS`]
//! transmit buffers used in turn. [`ConsoleClient::write`] returns once the bytes are queued
//! (it waits only for a free transmit buffer: a server that rate-limits this client slows it
//! down here); [`ConsoleClient::read`] never waits; [`ConsoleClient::wait_input`] does.
#![no_std]
#![deny(unsafe_code)]

use virtio::devices::{console, id};
use virtio::dma::DmaRegion;
use virtio::features::{Features, status};
use virtio::queue::{Buffer, DriverQueue, Token};
use virtio::split::SplitQueue;
use virtio::transport::shmem::{Notifier, SharedMemoryTransport};
use virtio::transport::{Transport, initialize};

/// Receive buffers kept posted.
pub const RX_BUFFERS: usize = 4;
/// Transmit buffers.
pub const TX_BUFFERS: usize = 4;
/// Bytes per buffer.
pub const BUFFER: usize = 256;
const RX_AREA: usize = 0;
const TX_AREA: usize = RX_BUFFERS * BUFFER;

/// Why the console failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleError {
    /// The server has not laid out the channel (yet).
    NotReady,
    /// The channel is not a console.
    NotConsole,
    /// The device was reset (the server restarted): reconnect.
    Reset,
    /// The server declared the channel broken (DEVICE_NEEDS_RESET): reconnect.
    NeedsReset,
    /// No transmit buffer came back within the notifier's waits.
    Timeout,
    /// The transport or a queue failed.
    Transport(virtio::Error),
}

impl From<virtio::Error> for ConsoleError {
    fn from(error: virtio::Error) -> Self {
        match error {
            virtio::Error::NoDevice => ConsoleError::NotReady,
            virtio::Error::DeviceNeedsReset => ConsoleError::NeedsReset,
            virtio::Error::Timeout => ConsoleError::Timeout,
            other => ConsoleError::Transport(other),
        }
    }
}

/// A console over a shared-memory channel, with split queues of `Q` entries.
#[derive(Debug)]
pub struct ConsoleClient<'a, N: Notifier + Clone, const Q: usize = 8> {
    region: DmaRegion<'a>,
    template: N,
    max_waits: u32,
    transport: SharedMemoryTransport<'a, N>,
    rx: SplitQueue<'a, Q>,
    tx: SplitQueue<'a, Q>,
    data: DmaRegion<'a>,
    rx_token: [Option<Token>; RX_BUFFERS],
    /// Filled receive buffers, oldest first: (buffer, length, bytes consumed).
    filled: [(usize, usize, usize); RX_BUFFERS],
    filled_count: usize,
    tx_token: [Option<Token>; TX_BUFFERS],
}

impl<'a, N: Notifier + Clone, const Q: usize> ConsoleClient<'a, N, Q> {
    /// Attaches to the channel in `region` and initialises the device (§3.1.1). `max_waits`
    /// bounds how many empty notifier waits a blocking call makes before
    /// [`ConsoleError::Timeout`].
    pub fn attach(
        region: DmaRegion<'a>,
        notifier: N,
        max_waits: u32,
    ) -> Result<Self, ConsoleError> {
        let mut transport = SharedMemoryTransport::new(region, notifier.clone())?;
        if transport.device_type() != id::CONSOLE {
            return Err(ConsoleError::NotConsole);
        }
        let ring = transport.ring_area();
        let data = transport.data_area();
        if data.len() < TX_AREA + TX_BUFFERS * BUFFER {
            return Err(ConsoleError::Transport(virtio::Error::OutOfBounds));
        }
        let half = ring.len() / 2;
        let mut queues = None;
        initialize(&mut transport, Features(0), |t, negotiated| {
            let rx = SplitQueue::<Q>::new(ring.subregion(0, half)?, negotiated, false)?;
            let tx = SplitQueue::<Q>::new(ring.subregion(half, half)?, negotiated, false)?;
            t.enable_queue(console::queue::RX0, rx.size(), rx.addresses())?;
            t.enable_queue(console::queue::TX0, tx.size(), tx.addresses())?;
            queues = Some((rx, tx));
            Ok(())
        })?;
        let (rx, tx) = queues.ok_or(ConsoleError::Transport(virtio::Error::QueueUnavailable))?;
        let mut this = Self {
            region,
            template: notifier,
            max_waits,
            transport,
            rx,
            tx,
            data,
            rx_token: [None; RX_BUFFERS],
            filled: [(0, 0, 0); RX_BUFFERS],
            filled_count: 0,
            tx_token: [None; TX_BUFFERS],
        };
        for b in 0..RX_BUFFERS {
            this.post_rx(b)?;
        }
        if this.rx.should_notify()? {
            this.transport.notify(console::queue::RX0)?;
        }
        Ok(this)
    }

    /// Attaches afresh after [`ConsoleError::Reset`] or [`ConsoleError::NeedsReset`].
    pub fn reconnect(&mut self) -> Result<(), ConsoleError> {
        *self = Self::attach(self.region, self.template.clone(), self.max_waits)?;
        Ok(())
    }

    /// The notifier.
    pub fn notifier(&mut self) -> &mut N {
        self.transport.notifier()
    }

    /// Whether the device is still live (see `blk-client`'s `check_device`).
    pub fn check_device(&mut self) -> Result<(), ConsoleError> {
        let s = self.transport.status();
        if s & status::DEVICE_NEEDS_RESET != 0 {
            Err(ConsoleError::NeedsReset)
        } else if s & status::DRIVER_OK == 0 || s & status::FAILED != 0 {
            Err(ConsoleError::Reset)
        } else {
            Ok(())
        }
    }

    fn post_rx(&mut self, b: usize) -> Result<(), ConsoleError> {
        let buffer = Buffer {
            addr: self.data.bus_address(RX_AREA + b * BUFFER),
            len: BUFFER as u32,
        };
        self.rx_token[b] = Some(self.rx.submit(&[], &[buffer])?);
        Ok(())
    }

    fn reap(&mut self) -> Result<(), ConsoleError> {
        while let Some(c) = self.rx.poll_used()? {
            let b = self
                .rx_token
                .iter()
                .position(|t| *t == Some(c.token))
                .ok_or(ConsoleError::Transport(virtio::Error::BadUsedId))?;
            self.rx_token[b] = None;
            if c.written == 0 {
                self.post_rx(b)?;
            } else if self.filled_count < RX_BUFFERS {
                self.filled[self.filled_count] = (b, c.written as usize, 0);
                self.filled_count += 1;
            }
        }
        while let Some(c) = self.tx.poll_used()? {
            if let Some(t) = self.tx_token.iter_mut().find(|t| **t == Some(c.token)) {
                *t = None;
            }
        }
        Ok(())
    }

    /// Waits once for the server; counts a miss.
    fn wait_once(&mut self, misses: &mut u32) -> Result<(), ConsoleError> {
        if self.transport.notifier().wait() {
            self.transport.ack_interrupt();
            *misses = 0;
        } else {
            *misses += 1;
            if *misses >= self.max_waits {
                self.check_device()?;
                return Err(ConsoleError::Timeout);
            }
        }
        self.check_device()
    }

    /// Queues `bytes` for output, waiting for free transmit buffers as needed.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), ConsoleError> {
        let mut misses = 0;
        for chunk in bytes.chunks(BUFFER) {
            loop {
                self.reap()?;
                if let Some(b) = self.tx_token.iter().position(Option::is_none) {
                    let at = TX_AREA + b * BUFFER;
                    self.data.write_bytes(at, chunk)?;
                    let buffer = Buffer {
                        addr: self.data.bus_address(at),
                        len: chunk.len() as u32,
                    };
                    self.tx_token[b] = Some(self.tx.submit(&[buffer], &[])?);
                    if self.tx.should_notify()? {
                        self.transport.notify(console::queue::TX0)?;
                    }
                    break;
                }
                if self.tx.enable_interrupts()? {
                    continue;
                }
                self.wait_once(&mut misses)?;
            }
        }
        Ok(())
    }

    /// Waits until every queued byte has been taken by the server.
    pub fn flush(&mut self) -> Result<(), ConsoleError> {
        let mut misses = 0;
        loop {
            self.reap()?;
            if self.tx_token.iter().all(Option::is_none) {
                return Ok(());
            }
            if self.tx.enable_interrupts()? {
                continue;
            }
            self.wait_once(&mut misses)?;
        }
    }

    /// Takes host input received so far into `buf`, without waiting; how many bytes.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, ConsoleError> {
        self.reap()?;
        let mut done = 0;
        while self.filled_count > 0 && done < buf.len() {
            let (b, len, read) = self.filled[0];
            let n = (len - read).min(buf.len() - done);
            self.data
                .read_bytes(RX_AREA + b * BUFFER + read, &mut buf[done..done + n])?;
            done += n;
            if read + n < len {
                self.filled[0].2 += n;
                continue;
            }
            self.filled.copy_within(1..self.filled_count, 0);
            self.filled_count -= 1;
            self.post_rx(b)?;
        }
        if done > 0 && self.rx.should_notify()? {
            self.transport.notify(console::queue::RX0)?;
        }
        if done == 0 {
            self.check_device()?;
        }
        Ok(done)
    }

    /// Waits (up to the notifier's bounded waits) until host input is there; whether it is.
    pub fn wait_input(&mut self) -> Result<bool, ConsoleError> {
        let mut misses = 0;
        loop {
            self.reap()?;
            if self.filled_count > 0 {
                return Ok(true);
            }
            if self.rx.enable_interrupts()? {
                continue;
            }
            match self.wait_once(&mut misses) {
                Ok(()) => {}
                Err(ConsoleError::Timeout) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }
}
