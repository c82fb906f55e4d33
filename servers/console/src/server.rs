//! The console class: each client's port-0 console (§5.3) over its channel, forwarded to the
//! real device's port the description gave it, on the I/O-server framework.
//!
//! In its turn of a pass each serving client gets:
//! - output: its transmitq chains' bytes forwarded to its port, as far as its rate credit and
//!   the port's free transmit buffers allow; a chain is returned once all its bytes went out
//!   (so a client over its rate is slowed down, its bytes are never dropped); at most
//!   [`CHUNKS_PER_PASS`] chunks per turn;
//! - input: while its port has host input, the client's receiveq buffers filled with it.
//!
//! A transmitq chain with a device-writable buffer or a receiveq chain with a device-readable
//! one (§5.3.6.1: transmit buffers are device-readable, receive buffers device-writable) stops
//! service to that client (DEVICE_NEEDS_RESET, §2.1.2) until it resets the device; other
//! clients are not affected.

use core::fmt;

use ioserver::chain::{read_readable, write_writable};
use ioserver::rate::{Throttle, TokenBucket};
use ioserver::{
    Channel, Clients, DeviceClass, DeviceInterrupts, MAX_CONFIG, Progress, Ready, Settings, Turn,
    Visit, ring_features,
};
use virtio::devices::{console, id};
use virtio::features::Features;
use virtio::queue::Chain;
use virtio::transport::shmem::Notifier;

use crate::backend::Ports;

pub use ioserver::MAX_CLIENTS;

/// Largest queue size offered to a client.
pub const CLIENT_QUEUE: u16 = 64;
/// Bytes moved per step.
pub const CHUNK: usize = 256;
/// Output steps per client per pass: no client holds the others up for long.
pub const CHUNKS_PER_PASS: usize = 4;

/// One client's console, from its channel's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleSpec {
    /// The real device's port its console is.
    pub port: u32,
    /// Output bytes per second (`None`: unlimited).
    pub rate: Option<u64>,
    /// Output burst in bytes (`None`: one second's worth).
    pub burst: Option<u64>,
}

/// Why a channel's configuration does not describe a usable console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecError {
    /// `port` is missing or not an integer.
    MissingPort,
    /// `port` is beyond the device's ports (or the server's limit).
    PortOutOfRange,
    /// Another client already has that port.
    PortTaken,
}

impl ConsoleSpec {
    /// From a channel's `port`, `rate` and `burst` values; `max_ports` is the device's
    /// `max_nr_ports` (§5.3.4); `taken` are the ports other clients already have.
    pub fn from_config(
        port: Option<u64>,
        rate: Option<u64>,
        burst: Option<u64>,
        max_ports: u32,
        taken: &[u32],
    ) -> Result<Self, SpecError> {
        let port = port.ok_or(SpecError::MissingPort)?;
        let port = u32::try_from(port)
            .ok()
            .filter(|&p| p < max_ports)
            .ok_or(SpecError::PortOutOfRange)?;
        if taken.contains(&port) {
            return Err(SpecError::PortTaken);
        }
        Ok(Self { port, rate, burst })
    }
}

/// The console class's own reasons to stop serving a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleRule {
    /// A transmitq chain with a device-writable buffer.
    WritableOutput,
    /// A receiveq chain with a device-readable buffer.
    ReadableInput,
}

/// The console counters per client.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ConsoleStats {
    /// Bytes forwarded to the client's port.
    pub bytes_out: u64,
    /// Bytes of host input delivered to the client.
    pub bytes_in: u64,
    /// Transmit chains completed.
    pub chains_out: u64,
    /// Times output had to wait for rate credit.
    pub throttled: u64,
}

/// Why the server stopped serving a client until it resets the device.
pub type Broken = ioserver::Broken<ConsoleRule>;
/// Where a client stands.
pub type ClientState = ioserver::ClientState<ConsoleRule>;
/// A client's counters.
pub type ClientStats = ioserver::ClientStats<ConsoleStats>;

/// One client's console in progress.
#[derive(Debug)]
pub struct PortClient {
    port: u32,
    rate: Throttle,
    /// The transmit chain being forwarded and how many of its bytes went out.
    sending: Option<(Chain, u64)>,
}

impl PortClient {
    /// The real device's port this client's console is.
    pub fn port(&self) -> u32 {
        self.port
    }
}

/// The console class: the real device's ports, one per client.
#[derive(Debug)]
pub struct Consoles<P> {
    ports: P,
    /// Which port each client slot has.
    taken: [Option<u32>; MAX_CLIENTS],
}

/// The console server.
pub type Server<'a, P, N> = ioserver::Server<'a, N, Consoles<P>>;

impl<P: Ports> Consoles<P> {
    /// The class over `ports`.
    pub fn new(ports: P) -> Self {
        Self {
            ports,
            taken: [None; MAX_CLIENTS],
        }
    }

    /// The backend.
    pub fn ports(&mut self) -> &mut P {
        &mut self.ports
    }

    /// The backend, to look at.
    pub fn ports_ref(&self) -> &P {
        &self.ports
    }

    /// Whether a client may have `port`: one the backend drives and no other client has.
    fn check(&self, port: u32) -> Result<(), SpecError> {
        if self.ports.port_status(port).is_none() {
            return Err(SpecError::PortOutOfRange);
        }
        if self.taken.contains(&Some(port)) {
            return Err(SpecError::PortTaken);
        }
        Ok(())
    }

    /// Forwards the client's output; whether anything moved, or the rule it broke.
    fn output<N: Notifier>(
        &mut self,
        channel: &mut Channel<'_, N, Self>,
        now_ns: u64,
        progress: &mut Progress,
    ) -> Result<bool, Broken> {
        let mut busy = false;
        for _ in 0..CHUNKS_PER_PASS {
            let (client, area, tx) = channel.split(console::queue::TX0);
            let Some(tx) = tx else {
                return Ok(busy);
            };
            if client.sending.is_none() {
                match tx.next_chain().map_err(Broken::Queue)? {
                    Some(chain) if chain.writable_len() > 0 => {
                        return Err(Broken::Class(ConsoleRule::WritableOutput));
                    }
                    Some(chain) => client.sending = Some((chain, 0)),
                    None => return Ok(busy),
                }
                busy = true;
            }
            let Some((chain, sent)) = client.sending.as_mut() else {
                return Ok(busy);
            };
            let remaining = chain.readable_len() - *sent;
            let mut accepted = 0;
            if remaining > 0 {
                let want = remaining.min(CHUNK as u64);
                let credit = match client.rate.grant(now_ns, want, progress) {
                    Ok(credit) => credit,
                    Err(new_wait) => {
                        if new_wait {
                            channel.stats_mut().throttled += 1;
                        }
                        return Ok(busy);
                    }
                };
                let n = remaining.min(CHUNK as u64).min(credit) as usize;
                let mut buf = [0u8; CHUNK];
                let n = read_readable(chain, area, *sent, &mut buf[..n]).map_err(Broken::Queue)?;
                accepted = self.ports.write(client.port, &buf[..n]);
                if accepted == 0 {
                    // The port's buffers are with the device: the next pass continues.
                    return Ok(busy);
                }
                busy = true;
                client.rate.take(accepted as u64);
                *sent += accepted as u64;
            }
            let done = *sent >= chain.readable_len();
            let finished = client.sending.take_if(|_| done);
            channel.stats_mut().bytes_out += accepted as u64;
            if let Some((chain, _)) = finished {
                // §5.3.6.1: nothing is written into a transmit buffer.
                channel
                    .push(console::queue::TX0, &chain, 0)
                    .map_err(Broken::Completion)?;
                channel.stats_mut().chains_out += 1;
            }
        }
        Ok(busy)
    }

    /// Delivers the client's port's input; whether any moved, or the rule it broke.
    fn input<N: Notifier>(&mut self, channel: &mut Channel<'_, N, Self>) -> Result<bool, Broken> {
        let mut busy = false;
        loop {
            let (client, area, rx) = channel.split(console::queue::RX0);
            let Some(rx) = rx else {
                return Ok(busy);
            };
            let pending = self.ports.input_pending(client.port);
            if pending == 0 {
                return Ok(busy);
            }
            // No buffer: the input waits in the port's buffers (and the device stops reading
            // the host side when they are full).
            let Some(chain) = rx.next_chain().map_err(Broken::Queue)? else {
                return Ok(busy);
            };
            busy = true;
            if chain.readable_len() > 0 {
                return Err(Broken::Class(ConsoleRule::ReadableInput));
            }
            let n = (chain.writable_len() as usize).min(CHUNK).min(pending);
            let mut buf = [0u8; CHUNK];
            let n = self.ports.read(client.port, &mut buf[..n]);
            write_writable(&chain, area, 0, &buf[..n])
                .and_then(|()| channel.push(console::queue::RX0, &chain, n as u32))
                .map_err(Broken::Completion)?;
            channel.stats_mut().bytes_in += n as u64;
        }
    }
}

impl<P: Ports> DeviceClass for Consoles<P> {
    type Spec = ConsoleSpec;
    type Refusal = SpecError;
    type Client = PortClient;
    type Stats = ConsoleStats;
    type Reason = ConsoleRule;
    const DEVICE_TYPE: u32 = id::CONSOLE;
    const QUEUES: u16 = 2;
    /// Either queue: a client may only write, or only read.
    const READY: Ready = Ready::Any(1 << console::queue::RX0 | 1 << console::queue::TX0);

    /// `port` (required: one the backend drives and no other client has), `rate` (output
    /// bytes per second; none: unlimited) and `burst` (bytes; none: a second's worth).
    fn spec(&self, config: &dyn Settings) -> Result<ConsoleSpec, SpecError> {
        let spec = ConsoleSpec::from_config(
            config.number("port"),
            config.number("rate"),
            config.number("burst"),
            u32::MAX,
            &[],
        )?;
        self.check(spec.port)?;
        Ok(spec)
    }

    fn admit(
        &mut self,
        index: usize,
        spec: &ConsoleSpec,
        now_ns: u64,
    ) -> Result<PortClient, SpecError> {
        self.check(spec.port)?;
        self.taken[index] = Some(spec.port);
        Ok(PortClient {
            port: spec.port,
            rate: Throttle::new(TokenBucket::from_config(spec.rate, spec.burst, now_ns)),
            sending: None,
        })
    }

    fn describe(client: &PortClient, out: &mut dyn fmt::Write) -> fmt::Result {
        match client.rate.rate() {
            Some(rate) => write!(
                out,
                "console on port {}, output limited to {rate} bytes/s",
                client.port
            ),
            None => write!(out, "console on port {}, unlimited", client.port),
        }
    }

    /// A console with port 0 only: no MULTIPORT, no size, no emergency write (§5.3.3).
    fn offer(&self, _spec: &ConsoleSpec, _config: &mut [u8; MAX_CONFIG]) -> (Features, usize) {
        (ring_features(), console::config::SIZE)
    }

    fn max_queue_size(&self) -> u16 {
        CLIENT_QUEUE
    }

    /// Forwards client `index`'s output, then delivers its port's input; a client that broke
    /// a rule is stopped until it resets.
    fn serve<N: Notifier>(&mut self, visit: Visit<'_, '_, N, Self>) -> Turn {
        let moved = visit.clients.get_mut(visit.index).map(|channel| {
            let output = self.output(channel, visit.now_ns, visit.progress);
            output.and_then(|out| Ok(self.input(channel)? || out))
        });
        match moved {
            None | Some(Ok(false)) => Turn::Idle,
            Some(Ok(true)) => Turn::Worked,
            Some(Err(why)) => {
                self.break_client(visit.clients, visit.index, why);
                Turn::Worked
            }
        }
    }

    /// Completions and control messages of the real device.
    fn poll_device<N: Notifier>(&mut self, _: &mut Clients<'_, N, Self>, _: u64) -> Progress {
        Progress {
            busy: self.ports.poll(),
            ..Progress::default()
        }
    }

    fn report(stats: &ClientStats, out: &mut dyn fmt::Write) -> fmt::Result {
        write!(
            out,
            "{} bytes out, {} bytes in, throttled {} times",
            stats.bytes_out, stats.bytes_in, stats.throttled
        )
    }

    /// Drops the chain in progress (a reset, a failure or a break, §2.4).
    fn stopped(&mut self, _index: usize, client: &mut PortClient) {
        client.sending = None;
        client.rate.stop_waiting();
    }

    fn device(&mut self) -> &mut dyn DeviceInterrupts {
        &mut self.ports
    }

    /// Receive buffers are always with the device: without its interrupt, it is polled.
    fn in_flight(&self) -> usize {
        1
    }
}
