//! The real console behind the server: the [`Ports`] trait the engine drives, and
//! [`VirtioPorts`], a virtio-console driver (§5.3) with VIRTIO_CONSOLE_F_MULTIPORT that opens
//! only the ports the description maps to clients.
//!
//! Multiport (§5.3.6.2): the driver posts buffers on the control receiveq, then sends
//! VIRTIO_CONSOLE_DEVICE_READY; the device announces each port with DEVICE_ADD, the driver
//! answers PORT_READY (value 1 for a port it uses, 0 for one it does not), and opens its own
//! ports with PORT_OPEN so the device starts delivering input. Data for port `p` goes over
//! that port's transmitq; input arrives in buffers the driver keeps posted on its receiveq
//! (§5.3.6.1). Every buffer lives in the server's DMA region: client bytes are copied into a
//! transmit buffer before the device sees them, and input is copied out of a receive buffer
//! into the client's memory.

use ioserver::DeviceInterrupts;
use virtio::devices::console::{self, ControlMessage, event};
use virtio::dma::DmaRegion;
use virtio::features::Features;
use virtio::queue::{Buffer, DriverQueue, Token};
use virtio::split::SplitQueue;
use virtio::transport::{Transport, initialize, read_config};

/// The host side of per-port consoles, as the engine sees it.
pub trait Ports: DeviceInterrupts {
    /// Queues `bytes` for output on `port`; returns how many were taken (0 when that port's
    /// transmit buffers are all with the device, or the port is unknown).
    fn write(&mut self, port: u32, bytes: &[u8]) -> usize;
    /// Bytes of host input waiting for `port`.
    fn input_pending(&self, port: u32) -> usize;
    /// Takes up to `buf.len()` bytes of `port`'s input, in order.
    fn read(&mut self, port: u32, buf: &mut [u8]) -> usize;
    /// Does the device's work: completions, control messages, notifications. Whether anything
    /// happened.
    fn poll(&mut self) -> bool;
    /// What the device told us about `port`, if the server drives it.
    fn port_status(&self, port: u32) -> Option<PortStatus>;
}

/// Most ports one server drives (each needs two queues and their buffers).
pub const MAX_PORTS: usize = 8;
/// Entries of each of the server's queues to the real device.
pub const QUEUE_SIZE: usize = 16;
/// Bytes of ring memory per queue (a split queue of 16 entries needs about 1 KiB).
pub const QUEUE_BYTES: usize = 4096;
/// Ring memory for the two control queues and `ports` ports.
pub const fn ring_bytes(ports: usize) -> usize {
    (2 + 2 * ports) * QUEUE_BYTES
}
const CTRL_BUFS: usize = 8;
const CTRL_RX_LEN: usize = 64;
const CTRL_TX_LEN: usize = 8;
const PORT_BUFS: usize = 4;
/// Bytes of each port receive and transmit buffer.
pub const PORT_BUF_LEN: usize = 256;
const CTRL_AREA: usize = CTRL_BUFS * (CTRL_RX_LEN + CTRL_TX_LEN);
const PORT_AREA: usize = 2 * PORT_BUFS * PORT_BUF_LEN;
/// Buffer memory for `ports` ports.
pub const fn buffer_bytes(ports: usize) -> usize {
    CTRL_AREA + ports * PORT_AREA
}
const PENDING_CONTROL: usize = 32;

/// What the driver negotiates (§5.3.3).
pub fn backend_features() -> Features {
    Features::from_bits(&[console::features::MULTIPORT])
}

/// What the device told us about a port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStatus {
    /// DEVICE_ADD seen.
    pub added: bool,
    /// The host end is open (the device's PORT_OPEN, value 1).
    pub host_open: bool,
    /// The device said this port is a console (CONSOLE_PORT).
    pub console: bool,
}

struct Port<'a> {
    id: u32,
    rx: SplitQueue<'a, QUEUE_SIZE>,
    tx: SplitQueue<'a, QUEUE_SIZE>,
    /// Offset of this port's buffers in the buffer memory.
    base: usize,
    rx_token: [Option<Token>; PORT_BUFS],
    /// Receive buffers the device filled, oldest first: (buffer, bytes, bytes consumed).
    filled: [(usize, usize, usize); PORT_BUFS],
    filled_count: usize,
    tx_token: [Option<Token>; PORT_BUFS],
    status: PortStatus,
}

/// A virtio-console device driven with split queues of [`QUEUE_SIZE`] entries.
pub struct VirtioPorts<'a, T> {
    transport: T,
    multiport: bool,
    max_ports: u32,
    control: Option<(SplitQueue<'a, QUEUE_SIZE>, SplitQueue<'a, QUEUE_SIZE>)>,
    ctrl_rx_token: [Option<Token>; CTRL_BUFS],
    ctrl_tx_token: [Option<Token>; CTRL_BUFS],
    pending: [ControlMessage; PENDING_CONTROL],
    pending_count: usize,
    ports: [Option<Port<'a>>; MAX_PORTS],
    memory: DmaRegion<'a>,
    broken: bool,
    /// Control messages received so far (for the log).
    pub events: u32,
}

impl<'a, T: Transport> VirtioPorts<'a, T> {
    /// Initialises the device (§3.1.1) with the control queues (if MULTIPORT) and the queues of
    /// `ports` (ring memory in `rings`, at least [`ring_bytes`]; buffers in `memory`, at least
    /// [`buffer_bytes`]). `after_enable` runs for each queue once it is enabled, before
    /// DRIVER_OK (e.g. to route its MSI-X vector). Without MULTIPORT only port 0 exists.
    pub fn new(
        mut transport: T,
        rings: DmaRegion<'a>,
        memory: DmaRegion<'a>,
        ports: &[u32],
        mut after_enable: impl FnMut(&mut T, u16) -> virtio::Result<()>,
    ) -> virtio::Result<Self> {
        if ports.len() > MAX_PORTS
            || rings.len() < ring_bytes(ports.len())
            || memory.len() < buffer_bytes(ports.len())
        {
            return Err(virtio::Error::OutOfBounds);
        }
        let mut control = None;
        let mut opened: [Option<Port<'a>>; MAX_PORTS] = [const { None }; MAX_PORTS];
        let mut max_ports = 1;
        let features = initialize(&mut transport, backend_features(), |t, negotiated| {
            let multiport = negotiated.has(console::features::MULTIPORT);
            if multiport {
                let mut bytes = [0u8; 4];
                read_config(t, console::config::MAX_NR_PORTS, &mut bytes)?;
                max_ports = u32::from_le_bytes(bytes);
            }
            let legacy = t.is_legacy();
            let mut queue = |index: usize, t: &mut T, q: u16| {
                let ring = rings.subregion(index * QUEUE_BYTES, QUEUE_BYTES)?;
                let queue = SplitQueue::<QUEUE_SIZE>::new(ring, negotiated, legacy)?;
                t.enable_queue(q, queue.size(), queue.addresses())?;
                after_enable(t, q)?;
                Ok::<_, virtio::Error>(queue)
            };
            if multiport {
                let rx = queue(0, t, console::queue::CONTROL_RX)?;
                let tx = queue(1, t, console::queue::CONTROL_TX)?;
                control = Some((rx, tx));
            }
            for (i, &id) in ports.iter().enumerate() {
                if id >= max_ports || ports[..i].contains(&id) {
                    return Err(virtio::Error::OutOfBounds);
                }
                let p = id as u16;
                let rx = queue(2 + 2 * i, t, console::queue::rx(p))?;
                let tx = queue(3 + 2 * i, t, console::queue::tx(p))?;
                opened[i] = Some(Port {
                    id,
                    rx,
                    tx,
                    base: CTRL_AREA + i * PORT_AREA,
                    rx_token: [None; PORT_BUFS],
                    filled: [(0, 0, 0); PORT_BUFS],
                    filled_count: 0,
                    tx_token: [None; PORT_BUFS],
                    // Without MULTIPORT port 0 simply exists.
                    status: PortStatus {
                        added: !multiport,
                        host_open: !multiport,
                        console: !multiport,
                    },
                });
            }
            Ok(())
        })?;
        let mut this = Self {
            transport,
            multiport: features.has(console::features::MULTIPORT),
            max_ports,
            control,
            ctrl_rx_token: [None; CTRL_BUFS],
            ctrl_tx_token: [None; CTRL_BUFS],
            pending: [ControlMessage {
                id: 0,
                event: 0,
                value: 0,
            }; PENDING_CONTROL],
            pending_count: 0,
            ports: opened,
            memory,
            broken: false,
            events: 0,
        };
        for b in 0..CTRL_BUFS {
            this.post_control_rx(b)?;
        }
        for i in 0..MAX_PORTS {
            for b in 0..PORT_BUFS {
                if this.ports[i].is_some() {
                    this.post_rx(i, b)?;
                }
            }
        }
        if this.multiport {
            // §5.3.6.2: the driver is ready for DEVICE_ADD messages.
            this.send_control(0, event::DEVICE_READY, 1);
        }
        this.kick_all();
        Ok(this)
    }

    /// Whether MULTIPORT was negotiated.
    pub fn multiport(&self) -> bool {
        self.multiport
    }

    /// `max_nr_ports` from the device's configuration (1 without MULTIPORT).
    pub fn max_ports(&self) -> u32 {
        self.max_ports
    }

    /// The transport.
    pub fn transport(&mut self) -> &mut T {
        &mut self.transport
    }

    fn post_control_rx(&mut self, b: usize) -> virtio::Result<()> {
        let Some((rx, _)) = self.control.as_mut() else {
            return Ok(());
        };
        let buffer = Buffer {
            addr: self.memory.bus_address(b * CTRL_RX_LEN),
            len: CTRL_RX_LEN as u32,
        };
        self.ctrl_rx_token[b] = Some(rx.submit(&[], &[buffer])?);
        Ok(())
    }

    fn post_rx(&mut self, i: usize, b: usize) -> virtio::Result<()> {
        let Some(port) = self.ports[i].as_mut() else {
            return Ok(());
        };
        let buffer = Buffer {
            addr: self.memory.bus_address(port.base + b * PORT_BUF_LEN),
            len: PORT_BUF_LEN as u32,
        };
        port.rx_token[b] = Some(port.rx.submit(&[], &[buffer])?);
        Ok(())
    }

    fn send_control(&mut self, id: u32, event: u16, value: u16) {
        if self.pending_count < PENDING_CONTROL {
            self.pending[self.pending_count] = ControlMessage { id, event, value };
            self.pending_count += 1;
        }
    }

    /// Submits queued control messages while control transmit buffers are free.
    fn flush_control(&mut self) -> bool {
        let mut sent = false;
        while self.pending_count > 0 {
            let Some(b) = self.ctrl_tx_token.iter().position(Option::is_none) else {
                break;
            };
            let Some((_, tx)) = self.control.as_mut() else {
                self.pending_count = 0;
                break;
            };
            let message = self.pending[0];
            let at = CTRL_BUFS * CTRL_RX_LEN + b * CTRL_TX_LEN;
            if self.memory.write_bytes(at, &message.to_bytes()).is_err() {
                self.broken = true;
                break;
            }
            let buffer = Buffer {
                addr: self.memory.bus_address(at),
                len: ControlMessage::SIZE as u32,
            };
            match tx.submit(&[buffer], &[]) {
                Ok(token) => self.ctrl_tx_token[b] = Some(token),
                Err(_) => break,
            }
            self.pending.copy_within(1..self.pending_count, 0);
            self.pending_count -= 1;
            sent = true;
        }
        if sent {
            self.kick(console::queue::CONTROL_TX, |s| {
                s.control.as_mut().map(|c| &mut c.1)
            });
        }
        sent
    }

    fn kick(
        &mut self,
        q: u16,
        queue: impl FnOnce(&mut Self) -> Option<&mut SplitQueue<'a, QUEUE_SIZE>>,
    ) {
        if queue(self).is_some_and(|queue| matches!(queue.should_notify(), Ok(true))) {
            let _ = self.transport.notify(q);
        }
    }

    fn kick_all(&mut self) {
        self.kick(console::queue::CONTROL_RX, |s| {
            s.control.as_mut().map(|c| &mut c.0)
        });
        let _ = self.flush_control();
        for i in 0..MAX_PORTS {
            let Some(id) = self.ports[i].as_ref().map(|p| p.id as u16) else {
                continue;
            };
            self.kick(console::queue::rx(id), |s| {
                s.ports[i].as_mut().map(|p| &mut p.rx)
            });
        }
    }

    /// Handles one control message from the device.
    fn control_message(&mut self, message: ControlMessage) {
        self.events += 1;
        let index = self
            .ports
            .iter()
            .position(|p| p.as_ref().is_some_and(|p| p.id == message.id));
        match message.event {
            event::DEVICE_ADD => match index {
                Some(i) => {
                    if let Some(p) = self.ports[i].as_mut() {
                        p.status.added = true;
                    }
                    self.send_control(message.id, event::PORT_READY, 1);
                    // Open our end: the device delivers input only to an open port.
                    self.send_control(message.id, event::PORT_OPEN, 1);
                }
                // A port the description gives no client: not used.
                None => self.send_control(message.id, event::PORT_READY, 0),
            },
            event::DEVICE_REMOVE => {
                if let Some(p) = index.and_then(|i| self.ports[i].as_mut()) {
                    p.status = PortStatus::default();
                }
            }
            event::CONSOLE_PORT => {
                if let Some(p) = index.and_then(|i| self.ports[i].as_mut()) {
                    p.status.console = true;
                    // §5.3.6.2.2: a console port MUST be answered with PORT_OPEN, value 1.
                    self.send_control(message.id, event::PORT_OPEN, 1);
                }
            }
            event::PORT_OPEN => {
                if let Some(p) = index.and_then(|i| self.ports[i].as_mut()) {
                    p.status.host_open = message.value != 0;
                }
            }
            // RESIZE, PORT_NAME: nothing to do for a port's byte stream.
            _ => {}
        }
    }

    fn reap_control(&mut self) -> bool {
        let mut busy = false;
        loop {
            let Some((rx, _)) = self.control.as_mut() else {
                return busy;
            };
            let Ok(polled) = rx.poll_used() else {
                self.broken = true;
                break;
            };
            let Some(completion) = polled else {
                break;
            };
            busy = true;
            let Some(b) = self
                .ctrl_rx_token
                .iter()
                .position(|t| *t == Some(completion.token))
            else {
                continue;
            };
            self.ctrl_rx_token[b] = None;
            let mut bytes = [0u8; ControlMessage::SIZE];
            if completion.written as usize >= ControlMessage::SIZE
                && self.memory.read_bytes(b * CTRL_RX_LEN, &mut bytes).is_ok()
            {
                self.control_message(ControlMessage::from_bytes(&bytes));
            }
            if self.post_control_rx(b).is_err() {
                self.broken = true;
            }
        }
        if busy {
            self.kick(console::queue::CONTROL_RX, |s| {
                s.control.as_mut().map(|c| &mut c.0)
            });
        }
        while let Some((_, tx)) = self.control.as_mut() {
            match tx.poll_used() {
                Ok(Some(c)) => {
                    busy = true;
                    if let Some(t) = self.ctrl_tx_token.iter_mut().find(|t| **t == Some(c.token)) {
                        *t = None;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    self.broken = true;
                    break;
                }
            }
        }
        busy
    }

    fn reap_port(&mut self, i: usize) -> bool {
        let mut busy = false;
        let Some(port) = self.ports[i].as_mut() else {
            return false;
        };
        while let Ok(Some(c)) = port.rx.poll_used() {
            busy = true;
            if let Some(b) = port.rx_token.iter().position(|t| *t == Some(c.token)) {
                port.rx_token[b] = None;
                if port.filled_count < PORT_BUFS {
                    port.filled[port.filled_count] = (b, c.written as usize, 0);
                    port.filled_count += 1;
                }
            }
        }
        while let Ok(Some(c)) = port.tx.poll_used() {
            busy = true;
            if let Some(t) = port.tx_token.iter_mut().find(|t| **t == Some(c.token)) {
                *t = None;
            }
        }
        // Empty input buffers go straight back to the device.
        let mut k = 0;
        while k < self.ports[i].as_ref().map_or(0, |p| p.filled_count) {
            let Some(port) = self.ports[i].as_mut() else {
                break;
            };
            let (b, len, read) = port.filled[k];
            if read < len {
                k += 1;
                continue;
            }
            port.filled.copy_within(k + 1..port.filled_count, k);
            port.filled_count -= 1;
            if self.post_rx(i, b).is_err() {
                self.broken = true;
            }
            let id = self.ports[i].as_ref().map_or(0, |p| p.id as u16);
            self.kick(console::queue::rx(id), |s| {
                s.ports[i].as_mut().map(|p| &mut p.rx)
            });
        }
        busy
    }

    fn port_index(&self, port: u32) -> Option<usize> {
        self.ports
            .iter()
            .position(|p| p.as_ref().is_some_and(|p| p.id == port))
    }
}

impl<T: Transport> Ports for VirtioPorts<'_, T> {
    fn write(&mut self, port: u32, bytes: &[u8]) -> usize {
        let Some(i) = self.port_index(port) else {
            return 0;
        };
        if self.broken || bytes.is_empty() {
            return 0;
        }
        self.reap_port(i);
        let Some(p) = self.ports[i].as_mut() else {
            return 0;
        };
        let Some(b) = p.tx_token.iter().position(Option::is_none) else {
            return 0;
        };
        let n = bytes.len().min(PORT_BUF_LEN);
        let at = p.base + (PORT_BUFS + b) * PORT_BUF_LEN;
        if self.memory.write_bytes(at, &bytes[..n]).is_err() {
            return 0;
        }
        let buffer = Buffer {
            addr: self.memory.bus_address(at),
            len: n as u32,
        };
        match p.tx.submit(&[buffer], &[]) {
            Ok(token) => p.tx_token[b] = Some(token),
            Err(_) => return 0,
        }
        let id = p.id as u16;
        self.kick(console::queue::tx(id), |s| {
            s.ports[i].as_mut().map(|p| &mut p.tx)
        });
        n
    }

    fn input_pending(&self, port: u32) -> usize {
        let Some(p) = self.port_index(port).and_then(|i| self.ports[i].as_ref()) else {
            return 0;
        };
        p.filled[..p.filled_count]
            .iter()
            .map(|&(_, len, read)| len - read)
            .sum()
    }

    fn read(&mut self, port: u32, buf: &mut [u8]) -> usize {
        let Some(i) = self.port_index(port) else {
            return 0;
        };
        let mut done = 0;
        if let Some(p) = self.ports[i].as_mut() {
            for entry in p.filled[..p.filled_count].iter_mut() {
                let (b, len, read) = *entry;
                let n = (len - read).min(buf.len() - done);
                if n == 0 {
                    if done == buf.len() {
                        break;
                    }
                    continue;
                }
                let at = p.base + b * PORT_BUF_LEN + read;
                if self
                    .memory
                    .read_bytes(at, &mut buf[done..done + n])
                    .is_err()
                {
                    break;
                }
                entry.2 += n;
                done += n;
            }
        }
        // Re-posts the buffers just emptied.
        self.reap_port(i);
        done
    }

    fn poll(&mut self) -> bool {
        let mut busy = self.reap_control();
        for i in 0..MAX_PORTS {
            busy |= self.reap_port(i);
        }
        busy |= self.flush_control();
        busy
    }

    fn port_status(&self, port: u32) -> Option<PortStatus> {
        self.ports
            .iter()
            .flatten()
            .find(|p| p.id == port)
            .map(|p| p.status)
    }
}

impl<T: Transport> DeviceInterrupts for VirtioPorts<'_, T> {
    fn ack_interrupt(&mut self) {
        self.transport.ack_interrupt();
    }
}

impl<T> core::fmt::Debug for VirtioPorts<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VirtioPorts")
            .field("multiport", &self.multiport)
            .field("max_ports", &self.max_ports)
            .finish()
    }
}
