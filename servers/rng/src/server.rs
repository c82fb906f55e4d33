//! The entropy class: each client's virtio-rng requestq (§5.4) served from the shared
//! [`Source`] at the client's rate, on the I/O-server framework.
//!
//! A request is one chain of device-writable buffers; the answer is the random bytes written
//! into it, the used length saying how many (§5.4.6: at least one, possibly fewer than the
//! buffer holds). In its turn of a pass each serving client gets at most one request answered
//! with `min(buffer, CHUNK, its rate credit, bytes the device has delivered)` bytes. A request
//! the client has no credit for, or that finds the pool empty, waits (it is held, not failed)
//! until credit returns or the device delivers; so a client over its rate is served at its
//! rate, and no client can take more than one request's worth per pass while others wait:
//! nobody starves.
//!
//! A chain with a device-readable buffer stops service to that client (DEVICE_NEEDS_RESET,
//! §2.1.2) until it resets the device; other clients are not affected.

use core::fmt;

use ioserver::chain::write_writable;
use ioserver::rate::{Throttle, TokenBucket};
use ioserver::{
    Clients, DeviceClass, DeviceInterrupts, MAX_CONFIG, Progress, Ready, Settings, Turn, Visit,
    ring_features,
};
use virtio::devices::{entropy, id};
use virtio::features::Features;
use virtio::queue::Chain;
use virtio::transport::shmem::Notifier;

use crate::source::Source;

pub use ioserver::MAX_CLIENTS;

/// Largest queue size offered to a client.
pub const CLIENT_QUEUE: u16 = 64;
/// Most bytes one answer carries.
pub const CHUNK: usize = 512;

/// One client's share, from its channel's configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntropySpec {
    /// Bytes per second (`None`: unlimited).
    pub rate: Option<u64>,
    /// Burst in bytes (`None`: one second's worth).
    pub burst: Option<u64>,
}

/// The entropy class's own reason to stop serving a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RngRule {
    /// A request with a device-readable buffer (§5.4.6: requests are device-writable only).
    ReadableBuffer,
}

/// Why the server stopped serving a client until it resets the device.
pub type Broken = ioserver::Broken<RngRule>;
/// Where a client stands.
pub type ClientState = ioserver::ClientState<RngRule>;
/// A client's counters.
pub type ClientStats = ioserver::ClientStats<EntropyStats>;

/// The entropy counters per client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntropyStats {
    /// Random bytes handed out.
    pub bytes: u64,
    /// Requests answered.
    pub requests: u64,
    /// Requests answered with fewer bytes than their buffer holds.
    pub partial: u64,
    /// Times a request had to wait for rate credit.
    pub throttled: u64,
}

/// One client's share in progress.
#[derive(Debug)]
pub struct Share {
    rate: Throttle,
    /// A request waiting for credit or entropy.
    held: Option<Chain>,
}

/// The entropy class: the device's pool, shared at each client's rate.
#[derive(Debug)]
pub struct Entropy<S> {
    source: S,
}

/// The entropy server.
pub type Server<'a, S, N> = ioserver::Server<'a, N, Entropy<S>>;

impl<S: Source> Entropy<S> {
    /// The class over `source`.
    pub fn new(source: S) -> Self {
        Self { source }
    }

    /// The source.
    pub fn source(&mut self) -> &mut S {
        &mut self.source
    }
}

impl<S: Source> DeviceClass for Entropy<S> {
    const DEVICE_TYPE: u32 = id::ENTROPY;
    const QUEUES: u16 = 1;
    const READY: Ready = Ready::All(1 << entropy::REQUEST_QUEUE);
    type Spec = EntropySpec;
    type Refusal = core::convert::Infallible;
    type Client = Share;
    type Stats = EntropyStats;
    type Reason = RngRule;

    /// `rate` (bytes per second; none: unlimited) and `burst` (bytes; none: a second's worth).
    fn spec(&self, config: &dyn Settings) -> Result<EntropySpec, Self::Refusal> {
        Ok(EntropySpec {
            rate: config.number("rate"),
            burst: config.number("burst"),
        })
    }

    fn describe(share: &Share, out: &mut dyn fmt::Write) -> fmt::Result {
        match share.rate.rate() {
            Some(rate) => write!(out, "entropy at {rate} bytes/s"),
            None => write!(out, "entropy, unlimited"),
        }
    }

    /// §5.4: one queue, no features of its own, no configuration.
    fn offer(&self, _spec: &EntropySpec, _config: &mut [u8; MAX_CONFIG]) -> (Features, usize) {
        (ring_features(), 0)
    }

    fn max_queue_size(&self) -> u16 {
        CLIENT_QUEUE
    }

    fn admit(
        &mut self,
        _index: usize,
        spec: &EntropySpec,
        now_ns: u64,
    ) -> Result<Share, Self::Refusal> {
        Ok(Share {
            rate: Throttle::new(TokenBucket::from_config(spec.rate, spec.burst, now_ns)),
            held: None,
        })
    }

    fn stopped(&mut self, _index: usize, share: &mut Share) {
        share.held = None;
        share.rate.stop_waiting();
    }

    fn poll_device<N: Notifier>(&mut self, _: &mut Clients<'_, N, Self>, _: u64) -> Progress {
        Progress {
            busy: self.source.poll(),
            ..Progress::default()
        }
    }

    /// Answers at most one request of client `index`.
    fn serve<N: Notifier>(&mut self, visit: Visit<'_, '_, N, Self>) -> Turn {
        let Visit { clients, index, .. } = visit;
        let Some(channel) = clients.get_mut(index) else {
            return Turn::Idle;
        };
        let (share, area, queue) = channel.split(entropy::REQUEST_QUEUE);
        let Some(queue) = queue else {
            return Turn::Idle;
        };
        if share.held.is_none() {
            match queue.next_chain() {
                Ok(Some(chain)) if chain.readable_len() > 0 => {
                    self.break_client(clients, index, Broken::Class(RngRule::ReadableBuffer));
                    return Turn::Worked;
                }
                Ok(Some(chain)) => share.held = Some(chain),
                Ok(None) => return Turn::Idle,
                Err(e) => {
                    self.break_client(clients, index, Broken::Queue(e));
                    return Turn::Worked;
                }
            }
            visit.progress.busy = true;
        }
        let Some(chain) = share.held.as_ref() else {
            return Turn::Idle;
        };
        let want = (chain.writable_len() as usize).min(CHUNK);
        let credit = match share.rate.grant(visit.now_ns, want as u64, visit.progress) {
            Ok(credit) => credit,
            Err(new_wait) => {
                if new_wait {
                    channel.stats_mut().throttled += 1;
                }
                return Turn::Idle;
            }
        };
        let available = self.source.available();
        if available == 0 {
            return Turn::Idle;
        }
        let n = want.min(available).min(credit.min(CHUNK as u64) as usize);
        let mut bytes = [0u8; CHUNK];
        let n = self.source.take(&mut bytes[..n]);
        let Some(chain) = share.held.take() else {
            return Turn::Idle;
        };
        share.rate.take(n as u64);
        let written = write_writable(&chain, area, 0, &bytes[..n]);
        // What was handed out is not kept.
        bytes[..n].fill(0);
        match written.and_then(|()| channel.push(entropy::REQUEST_QUEUE, &chain, n as u32)) {
            Ok(()) => {
                let stats = channel.stats_mut();
                stats.bytes += n as u64;
                stats.requests += 1;
                if (n as u64) < chain.writable_len() {
                    stats.partial += 1;
                }
            }
            Err(e) => self.break_client(clients, index, Broken::Completion(e)),
        }
        Turn::Worked
    }

    fn report(stats: &ClientStats, out: &mut dyn fmt::Write) -> fmt::Result {
        write!(
            out,
            "{} bytes in {} requests ({} partial), throttled {} times",
            stats.bytes, stats.requests, stats.partial, stats.throttled
        )
    }

    fn device(&mut self) -> &mut dyn DeviceInterrupts {
        &mut self.source
    }

    /// Buffers are always with the device: without its interrupt, it is polled.
    fn in_flight(&self) -> usize {
        1
    }
}
