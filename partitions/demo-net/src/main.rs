//! The demo's network partition: smoltcp over the virtual NIC the network server gives it (a
//! virtio-net device over the inter-partition VirtIO transport). It has a static IPv4 address
//! and answers:
//!
//! - UDP echo on `udp-port`: every datagram is sent back to where it came from;
//! - a TCP line service on `tcp-port`: `stats` answers the partition's counters, `bulk N` sends
//!   N bytes of a known pattern (the throughput benchmark reads them), `quit` closes, and any
//!   other line is echoed back.
//!
//! It prints what it does. Configuration (`[partitions.NAME.config]`, declared with types and
//! defaults in config-schema.toml): `channel` (required; the shared region and notifications
//! are named after it as in docs/io-servers.md), `ip` (default `10.0.2.15/24`), `gateway`
//! (default `10.0.2.2`), `udp-port` (default 7), `tcp-port` (default 23), `irq-mask`
//! (notification bits to wait on, absent: all), `halt-command` (default false: whether a
//! `halt` line ends the partition, for tests that power the system off when it has ended).
#![no_std]
#![no_main]

use core::fmt::Write as _;

use net_client::{NetClient, NetError, SmolNic};
use rt::println;
use rt::syscall::{partition_info, sleep_until, time_now_ns};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet, SocketStorage};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address, Ipv4Cidr};
use virtio::transport::shmem::Notifier;

rt::entry!(main);

/// TCP connections served at once (each a socket listening on the service port).
const TCP_SOCKETS: usize = 2;
const TCP_RX: usize = 2048;
const TCP_TX: usize = 32 * 1024;
/// Longest command line.
const LINE: usize = 128;
/// Sleep between polls of the notification word when idle.
const IDLE_NS: u64 = 1_000_000;

fn parse_ipv4(text: &str) -> Option<Ipv4Address> {
    let mut octets = [0u8; 4];
    let mut parts = text.split('.');
    for o in &mut octets {
        *o = parts.next()?.parse().ok()?;
    }
    parts
        .next()
        .is_none()
        .then(|| Ipv4Address::from_octets(octets))
}

/// `a.b.c.d/len` (default /24).
fn parse_cidr(text: &str) -> Option<Ipv4Cidr> {
    let (ip, len) = text.split_once('/').unwrap_or((text, "24"));
    let len: u8 = len.parse().ok().filter(|&l| l <= 32)?;
    Some(Ipv4Cidr::new(parse_ipv4(ip)?, len))
}

/// A small fixed-capacity string.
struct Text<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Text<N> {
    fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
        }
    }
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl<const N: usize> core::fmt::Write for Text<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(N - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// The byte at offset `i` of a `bulk` transfer: a pattern the receiver can check.
fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

/// Per-connection state of the line service.
#[derive(Clone, Copy)]
struct Session {
    line: [u8; LINE],
    len: usize,
    /// Bytes of a `bulk` transfer still to send, and sent so far.
    bulk_left: u64,
    bulk_sent: u64,
    /// Offset in the current transfer (its pattern starts at 0 each time).
    bulk_at: u64,
    /// Closing after the output drains.
    closing: bool,
    connected: bool,
    /// End the partition once the output drained.
    halting: bool,
}

impl Session {
    const NEW: Session = Session {
        line: [0; LINE],
        len: 0,
        bulk_left: 0,
        bulk_sent: 0,
        bulk_at: 0,
        closing: false,
        connected: false,
        halting: false,
    };
}

#[derive(Default)]
struct Counters {
    udp_datagrams: u64,
    udp_bytes: u64,
    tcp_connections: u64,
    tcp_lines: u64,
    bulk_bytes: u64,
}

fn main() {
    let generation = partition_info().map_or(0, |i| i.generation);
    let mut text = [0u8; 1024];
    // The settings were checked against config-schema.toml and every default filled in when
    // the image was built: a missing one means a broken image (said, and we stop).
    let Some(config) = rt::config::load(&mut text) else {
        return;
    };
    let (Some(channel), Some(cidr), Some(gateway)) = (
        config.need("channel"),
        config.need("ip"),
        config.need("gateway"),
    ) else {
        return;
    };
    // The schema bounds both ports to 1..=65535.
    let (Some(udp_port), Some(tcp_port), Some(halt_command)) = (
        config
            .get_u64("udp-port")
            .and_then(|p| u16::try_from(p).ok()),
        config
            .get_u64("tcp-port")
            .and_then(|p| u16::try_from(p).ok()),
        config.need_bool("halt-command"),
    ) else {
        return;
    };
    let (Some(cidr), Some(gateway)) = (parse_cidr(cidr), parse_ipv4(gateway)) else {
        println!("{channel}: bad `ip` ({cidr}) or `gateway` ({gateway}); stopping");
        return;
    };
    let Some((_, memory, notifier)) = iokit::client_attach(&config) else {
        return;
    };
    let mut reported = false;
    let nic = loop {
        match NetClient::<_, 32>::attach(memory, notifier.clone()) {
            Ok(nic) => break nic,
            Err(e) => {
                if !reported {
                    println!("{channel}: waiting for the network server ({e:?})");
                    reported = true;
                }
                sleep_until(time_now_ns() + 100_000_000);
            }
        }
    };
    let mut nic = SmolNic::new(nic);
    let mac = nic.nic.mac();
    let now = || Instant::from_micros((time_now_ns() / 1000) as i64);
    let mut iface = Interface::new(
        Config::new(HardwareAddress::Ethernet(EthernetAddress(mac))),
        &mut nic,
        now(),
    );
    iface.update_ip_addrs(|addrs| {
        let _ = addrs.push(IpCidr::Ipv4(cidr));
    });
    let _ = iface.routes_mut().add_default_ipv4_route(gateway);
    let link = nic.nic.link_up();
    println!(
        "{channel}: MAC {}, link {}, {cidr} via {gateway}; UDP echo on port {udp_port}, TCP line service on port {tcp_port} (generation {generation})",
        EthernetAddress(mac),
        if link { "up" } else { "down" },
    );

    let mut udp_meta = [udp::PacketMetadata::EMPTY; 8];
    let mut udp_data = [0u8; 4096];
    let mut udp_tx_meta = [udp::PacketMetadata::EMPTY; 8];
    let mut udp_tx_data = [0u8; 4096];
    let mut udp_socket = udp::Socket::new(
        udp::PacketBuffer::new(&mut udp_meta[..], &mut udp_data[..]),
        udp::PacketBuffer::new(&mut udp_tx_meta[..], &mut udp_tx_data[..]),
    );
    if udp_socket.bind(udp_port).is_err() {
        println!("{channel}: cannot bind UDP port {udp_port}");
    }
    let mut storage = [SocketStorage::EMPTY; 1 + TCP_SOCKETS];
    let mut sockets = SocketSet::new(&mut storage[..]);
    let udp_handle = sockets.add(udp_socket);
    let mut tcp_rx = [[0u8; TCP_RX]; TCP_SOCKETS];
    let mut tcp_tx = [[0u8; TCP_TX]; TCP_SOCKETS];
    let mut tcp_handles: [Option<SocketHandle>; TCP_SOCKETS] = [None; TCP_SOCKETS];
    for ((rx, tx), handle) in tcp_rx
        .iter_mut()
        .zip(tcp_tx.iter_mut())
        .zip(&mut tcp_handles)
    {
        let socket = tcp::Socket::new(
            tcp::SocketBuffer::new(&mut rx[..]),
            tcp::SocketBuffer::new(&mut tx[..]),
        );
        *handle = Some(sockets.add(socket));
    }
    let mut sessions = [Session::NEW; TCP_SOCKETS];
    let mut counters = Counters::default();

    let mut halt = false;
    loop {
        if halt {
            // Let the FIN go out, then end.
            for _ in 0..50 {
                iface.poll(now(), &mut nic, &mut sockets);
                sleep_until(time_now_ns() + IDLE_NS);
            }
            println!(
                "{channel}: halting as asked ({} UDP datagrams, {} TCP connections)",
                counters.udp_datagrams, counters.tcp_connections
            );
            return;
        }
        let t = now();
        iface.poll(t, &mut nic, &mut sockets);
        let mut work = false;

        // UDP echo.
        let socket = sockets.get_mut::<udp::Socket>(udp_handle);
        let mut datagram = [0u8; 2048];
        while socket.can_send() {
            let Ok((n, meta)) = socket.recv_slice(&mut datagram) else {
                break;
            };
            work = true;
            counters.udp_datagrams += 1;
            counters.udp_bytes += n as u64;
            if socket.send_slice(&datagram[..n], meta.endpoint).is_ok()
                && (counters.udp_datagrams <= 5 || counters.udp_datagrams.is_multiple_of(100))
            {
                println!(
                    "udp: echoed {n} bytes to {} (datagram {})",
                    meta.endpoint, counters.udp_datagrams
                );
            }
        }

        // The TCP line service.
        for (handle, session) in tcp_handles.iter().flatten().zip(sessions.iter_mut()) {
            let socket = sockets.get_mut::<tcp::Socket>(*handle);
            if !socket.is_open() {
                if session.connected {
                    println!(
                        "tcp: connection closed ({} bulk bytes sent)",
                        session.bulk_sent
                    );
                }
                *session = Session::NEW;
                if socket.listen(tcp_port).is_err() {
                    println!("tcp: cannot listen on port {tcp_port}");
                }
                continue;
            }
            if socket.is_active() && !session.connected && socket.may_send() {
                session.connected = true;
                counters.tcp_connections += 1;
                let peer = socket.remote_endpoint();
                if let Some(peer) = peer {
                    println!("tcp: connection {} from {peer}", counters.tcp_connections);
                }
                let mut hello = Text::<128>::new();
                let _ = writeln!(
                    hello,
                    "demo-net at {}: echo, stats, bulk N, quit",
                    cidr.address()
                );
                let _ = socket.send_slice(hello.as_bytes());
                work = true;
            }
            if !session.connected {
                continue;
            }
            // Bulk transfer: fill the send buffer.
            while session.bulk_left > 0 && socket.can_send() {
                let mut chunk = [0u8; 1024];
                let n = (session.bulk_left as usize).min(chunk.len());
                for (i, byte) in chunk[..n].iter_mut().enumerate() {
                    *byte = pattern(session.bulk_at + i as u64);
                }
                match socket.send_slice(&chunk[..n]) {
                    Ok(0) | Err(_) => break,
                    Ok(sent) => {
                        session.bulk_left -= sent as u64;
                        session.bulk_sent += sent as u64;
                        session.bulk_at += sent as u64;
                        counters.bulk_bytes += sent as u64;
                        work = true;
                    }
                }
                if session.bulk_left == 0 {
                    println!("tcp: bulk transfer of {} bytes queued", session.bulk_at);
                }
            }
            // Lines in.
            while session.bulk_left == 0 && !session.closing && socket.can_recv() {
                let mut byte = [0u8; 1];
                if socket.recv_slice(&mut byte) != Ok(1) {
                    break;
                }
                work = true;
                if byte[0] != b'\n' {
                    if session.len < LINE {
                        session.line[session.len] = byte[0];
                        session.len += 1;
                    }
                    continue;
                }
                let line = core::str::from_utf8(&session.line[..session.len])
                    .unwrap_or("")
                    .trim_end_matches('\r');
                counters.tcp_lines += 1;
                let mut answer = Text::<256>::new();
                if line == "stats" {
                    let stats = nic.nic.stats();
                    let _ = writeln!(
                        answer,
                        "stats: rx {} frames {} bytes, tx {} frames {} bytes, udp {} datagrams, tcp {} connections {} lines, bulk {} bytes",
                        stats.rx_frames,
                        stats.rx_bytes,
                        stats.tx_frames,
                        stats.tx_bytes,
                        counters.udp_datagrams,
                        counters.tcp_connections,
                        counters.tcp_lines,
                        counters.bulk_bytes
                    );
                    println!("tcp: stats asked");
                } else if let Some(n) = line.strip_prefix("bulk ") {
                    session.bulk_left = n.trim().parse().unwrap_or(0);
                    session.bulk_at = 0;
                    println!("tcp: bulk transfer of {} bytes starts", session.bulk_left);
                } else if line == "halt" && halt_command {
                    session.closing = true;
                    session.halting = true;
                    let _ = writeln!(answer, "halting");
                    println!("tcp: halt asked");
                } else if line == "quit" {
                    session.closing = true;
                    let _ = writeln!(answer, "bye");
                    println!("tcp: quit");
                } else {
                    let _ = writeln!(answer, "{line}");
                    println!("tcp: echoed line \"{line}\"");
                }
                let _ = socket.send_slice(answer.as_bytes());
                session.len = 0;
            }
            if session.closing && socket.send_queue() == 0 {
                socket.close();
                if session.halting {
                    halt = true;
                }
            }
            if !socket.may_recv() && session.bulk_left == 0 && socket.send_queue() == 0 {
                // The peer closed its side and everything was sent: close ours.
                socket.close();
            }
        }

        match nic.error.take() {
            Some(e @ (NetError::Reset | NetError::NeedsReset)) => {
                println!("{channel}: the network server is gone ({e:?}); reconnecting");
                while nic.nic.reconnect().is_err() {
                    sleep_until(time_now_ns() + 100_000_000);
                }
                println!("{channel}: reconnected");
            }
            Some(NetError::Busy) | None => {}
            Some(e) => println!("{channel}: NIC error {e:?}"),
        }

        let active = core::mem::take(&mut nic.activity) || work;
        if active {
            continue;
        }
        // Idle: sleep until the server signals or smoltcp has a timer due (1 ms steps, the
        // kernel's tick); re-check for a frame first (§2.7.10).
        if nic.nic.enable_interrupts().unwrap_or(true) {
            continue;
        }
        let delay = iface
            .poll_delay(now(), &sockets)
            .map_or(u64::MAX, |d| d.total_micros() * 1000);
        let deadline = time_now_ns().saturating_add(delay.min(50_000_000));
        loop {
            if nic.nic.notifier().take_pending() {
                nic.nic.ack_interrupt();
                break;
            }
            let t = time_now_ns();
            if t >= deadline {
                break;
            }
            sleep_until((t + IDLE_NS).min(deadline));
        }
    }
}
