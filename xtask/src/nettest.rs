//! Boots a system with a network server and acts on it from the host while QEMU runs: UDP
//! datagrams and TCP connections through QEMU's host forwards (`-netdev user,hostfwd=...`).
//! Used by the QEMU integration test (`tests.rs`) and by `cargo xtask bench`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::devices::{self, Forward, HostPorts};
use crate::qemu::{self, Captured};
use crate::{Arch, BuildOpts, build, image};

/// What the host did and saw, line by line, or why it failed.
pub type HostResult = Result<Vec<String>, String>;

/// Boots `system` (x86_64) with `cmdline` and runs `action` with its forwards while QEMU runs.
pub fn boot_and_act(
    arch: Arch,
    system: &str,
    cmdline: &str,
    timeout: Duration,
    action: impl FnOnce(&[Forward]) -> HostResult + Send + 'static,
) -> Result<(Captured, HostResult)> {
    let kernel = build::kernel(&BuildOpts { arch, debug: false })?;
    let cmdline = qemu::effective_cmdline(arch, cmdline);
    let payload = image::payload(arch, &cmdline, Some(system))?;
    let bootable = image::from_kernel(&kernel, arch, false, &cmdline, &payload, system)?;
    let description = crate::system::load(&crate::system::description_path(system))?;
    let (args, forwards) = devices::qemu_setup(
        &description,
        arch,
        devices::Disk::Fresh,
        HostPorts::Ephemeral,
    )?;
    if forwards.is_empty() {
        bail!("system {system} forwards no host port");
    }
    let mut cmd = qemu::command(arch, &bootable, false);
    cmd.args(args);
    let host = std::thread::spawn(move || action(&forwards));
    let captured = qemu::capture(cmd, arch, timeout, false)?;
    let result = host
        .join()
        .unwrap_or_else(|_| Err("the host action panicked".into()));
    Ok((captured, result))
}

/// The forward of `proto` to `partition`.
pub fn forward<'f>(
    forwards: &'f [Forward],
    partition: &str,
    proto: &str,
) -> Result<&'f Forward, String> {
    forwards
        .iter()
        .find(|f| f.partition == partition && f.proto == proto)
        .ok_or(format!("no {proto} forward to {partition}"))
}

/// Sends `payload` to the forwarded UDP port until the same bytes come back (the guest may
/// still be booting: slirp drops datagrams for a guest that does not answer ARP yet).
pub fn udp_echo(port: u16, payload: &[u8], deadline: Instant) -> Result<Duration, String> {
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        let sent = Instant::now();
        socket
            .send_to(payload, ("127.0.0.1", port))
            .map_err(|e| e.to_string())?;
        match socket.recv_from(&mut buf) {
            Ok((n, _)) if &buf[..n] == payload => return Ok(sent.elapsed()),
            Ok((n, _)) => {
                return Err(format!(
                    "UDP port {port}: sent {:?}, got {:?} back",
                    String::from_utf8_lossy(payload),
                    String::from_utf8_lossy(&buf[..n])
                ));
            }
            Err(_) => continue,
        }
    }
    Err(format!("UDP port {port}: no echo before the deadline"))
}

/// Connects to the forwarded TCP port and reads the service's greeting line, retrying until
/// the guest listens (slirp accepts on the host side and closes if the guest refuses).
pub fn tcp_connect(port: u16, deadline: Instant) -> Result<(TcpStream, String), String> {
    let mut last = String::from("never tried");
    while Instant::now() < deadline {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => {
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .map_err(|e| e.to_string())?;
                let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
                let mut greeting = String::new();
                match reader.read_line(&mut greeting) {
                    Ok(n) if n > 0 => return Ok((stream, greeting.trim_end().to_string())),
                    Ok(_) => last = "closed before the greeting".into(),
                    Err(e) => last = e.to_string(),
                }
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Err(format!(
        "TCP port {port}: no greeting before the deadline ({last})"
    ))
}

/// Sends one line and reads one line back.
pub fn tcp_line(stream: &mut TcpStream, line: &str) -> Result<String, String> {
    stream
        .write_all(format!("{line}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut answer = String::new();
    reader.read_line(&mut answer).map_err(|e| e.to_string())?;
    Ok(answer.trim_end().to_string())
}

/// Asks for `bytes` of the bulk pattern, reads and checks them; returns the time taken from
/// the request to the last byte.
pub fn tcp_bulk(stream: &mut TcpStream, bytes: u64) -> Result<Duration, String> {
    let start = Instant::now();
    stream
        .write_all(format!("bulk {bytes}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut got = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    while got < bytes {
        let n = stream
            .read(&mut buf)
            .map_err(|e| format!("after {got} bytes: {e}"))?;
        if n == 0 {
            return Err(format!("closed after {got} of {bytes} bytes"));
        }
        for (i, &b) in buf[..n].iter().enumerate() {
            let at = got + i as u64;
            if b != (at % 251) as u8 {
                return Err(format!("byte {at} is {b}, expected {}", at % 251));
            }
        }
        got += n as u64;
    }
    Ok(start.elapsed())
}

/// The integration test's host side: UDP echo from both clients, then a TCP session with the
/// first (echo, stats, a checked bulk transfer), then `halt`, which ends it (the system powers
/// off when it has: `exit_after=web`).
pub fn check_services(forwards: &[Forward]) -> HostResult {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out = Vec::new();
    for partition in ["web", "web2"] {
        let udp = forward(forwards, partition, "udp")?;
        let payload = format!("ping {partition} through the net server");
        let rtt = udp_echo(udp.host_port, payload.as_bytes(), deadline)?;
        out.push(format!(
            "udp {}:{} via host port {}: echoed in {rtt:?}",
            udp.guest_ip, udp.guest_port, udp.host_port
        ));
    }
    let tcp = forward(forwards, "web", "tcp")?;
    let (mut stream, greeting) = tcp_connect(tcp.host_port, deadline)?;
    if !greeting.starts_with("demo-net at 10.0.2.15") {
        return Err(format!("unexpected greeting {greeting:?}"));
    }
    out.push(format!("tcp greeting: {greeting}"));
    let echo = tcp_line(&mut stream, "hello bulkhead")?;
    if echo != "hello bulkhead" {
        return Err(format!("TCP echo returned {echo:?}"));
    }
    let stats = tcp_line(&mut stream, "stats")?;
    // UDP datagrams sent while the guest was still booting may be answered late: at least one.
    if !stats.starts_with("stats: rx ") || stats.contains(" udp 0 datagrams") {
        return Err(format!("unexpected stats line {stats:?}"));
    }
    out.push(format!("tcp stats: {stats}"));
    let took = tcp_bulk(&mut stream, 200_000)?;
    out.push(format!("tcp bulk: 200000 bytes checked in {took:?}"));
    let bye = tcp_line(&mut stream, "halt")?;
    if bye != "halting" {
        return Err(format!("halt answered {bye:?}"));
    }
    Ok(out)
}
