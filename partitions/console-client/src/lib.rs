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
use virtio::features::Features;
use virtio::queue::{Buffer, DriverQueue, Token};
use virtio::transport::shmem::Notifier;
use virtio_session::{Class, Session, SessionError};

/// Receive buffers kept posted.
pub const RX_BUFFERS: usize = 4;
/// Transmit buffers.
pub const TX_BUFFERS: usize = 4;
/// Bytes per buffer.
pub const BUFFER: usize = 256;
const RX_AREA: usize = 0;
const TX_AREA: usize = RX_BUFFERS * BUFFER;
const RX: u16 = console::queue::RX0;
const TX: u16 = console::queue::TX0;

virtio_session::client_error! {
    /// Why the console failed.
    pub enum ConsoleError {
        /// The channel is not a console.
        wrong_device: NotConsole,
        /// No transmit buffer came back within the notifier's waits.
        Timeout,
    }
}

/// What a console client asks of the channel: port 0 only (no MULTIPORT), room for its
/// buffers.
const CLASS: Class = Class {
    device_type: id::CONSOLE,
    features: Features(0),
    data_bytes: TX_AREA + TX_BUFFERS * BUFFER,
};

/// A console over a shared-memory channel, with split queues of `Q` entries.
#[derive(Debug)]
pub struct ConsoleClient<'a, N: Notifier + Clone, const Q: usize = 8> {
    session: Session<'a, N, Q, 2>,
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
        Self::on(Session::attach(region, notifier, CLASS, max_waits)?)
    }

    /// The driver over a fresh session: every receive buffer posted, nothing to send.
    fn on(session: Session<'a, N, Q, 2>) -> Result<Self, ConsoleError> {
        let mut this = Self {
            data: session.data_area(),
            session,
            rx_token: [None; RX_BUFFERS],
            filled: [(0, 0, 0); RX_BUFFERS],
            filled_count: 0,
            tx_token: [None; TX_BUFFERS],
        };
        for b in 0..RX_BUFFERS {
            this.post_rx(b)?;
        }
        this.session.kick(RX)?;
        Ok(this)
    }

    /// Attaches afresh after [`ConsoleError::Reset`] or [`ConsoleError::NeedsReset`].
    pub fn reconnect(&mut self) -> Result<(), ConsoleError> {
        *self = Self::on(self.session.reattach()?)?;
        Ok(())
    }

    /// The notifier.
    pub fn notifier(&mut self) -> &mut N {
        self.session.notifier()
    }

    /// Whether the device is still live (see `blk-client`'s `check_device`).
    pub fn check_device(&mut self) -> Result<(), ConsoleError> {
        Ok(self.session.check_device()?)
    }

    fn post_rx(&mut self, b: usize) -> Result<(), ConsoleError> {
        let buffer = Buffer {
            addr: self.data.bus_address(RX_AREA + b * BUFFER),
            len: BUFFER as u32,
        };
        self.rx_token[b] = Some(self.session.queue(RX)?.submit(&[], &[buffer])?);
        Ok(())
    }

    fn reap(&mut self) -> Result<(), ConsoleError> {
        while let Some((b, c)) = self.session.take_used(RX, &mut self.rx_token)? {
            if c.written == 0 {
                self.post_rx(b)?;
            } else if self.filled_count < RX_BUFFERS {
                self.filled[self.filled_count] = (b, c.written as usize, 0);
                self.filled_count += 1;
            }
        }
        while let Some(c) = self.session.queue(TX)?.poll_used()? {
            if let Some(t) = self.tx_token.iter_mut().find(|t| **t == Some(c.token)) {
                *t = None;
            }
        }
        Ok(())
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
                    self.tx_token[b] = Some(self.session.queue(TX)?.submit(&[buffer], &[])?);
                    self.session.kick(TX)?;
                    break;
                }
                self.session.wait_used(TX, &mut misses)?;
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
            self.session.wait_used(TX, &mut misses)?;
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
        if done > 0 {
            self.session.kick(RX)?;
        } else {
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
            match self.session.wait_used(RX, &mut misses) {
                Ok(()) => {}
                Err(SessionError::Timeout) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
    }
}
