//! The demo's console partition: on its own console (a virtio-console exported by the console
//! server over the inter-partition VirtIO transport, backed by one port of the real device and
//! so by one host chardev) it prints a greeting and a numbered line every `period-ms`, and
//! echoes back whatever the host types, reporting it in the kernel log too. With `flood =
//! true` it writes as fast as its console takes bytes, reporting the count every second: a
//! client the description rate-limits is slowed down by the server, never its neighbours.
//!
//! Configuration (`[partitions.NAME.config]`, declared in config-schema.toml): `channel`
//! (required; the shared region and notifications are named after it as in
//! docs/io-servers.md), `period-ms` (default 500), `flood` (default false), `irq-mask`
//! (absent: all bits).
#![no_std]
#![no_main]

use console_client::{ConsoleClient, ConsoleError};
use rt::println;
use rt::syscall::{sleep_until, time_now_ns};
use virtio::dma::DmaRegion;

use iokit::KernelNotifier;

rt::entry!(main);

/// A small formatter into a stack buffer.
struct Line {
    buf: [u8; 200],
    len: usize,
}

impl Line {
    fn new() -> Self {
        Self {
            buf: [0; 200],
            len: 0,
        }
    }
    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl core::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

macro_rules! line {
    ($($arg:tt)*) => {{
        let mut l = Line::new();
        let _ = core::fmt::Write::write_fmt(&mut l, format_args!($($arg)*));
        l
    }};
}

fn connect<'a>(
    region: DmaRegion<'a>,
    notifier: &KernelNotifier,
    channel: &str,
) -> ConsoleClient<'a, KernelNotifier> {
    let mut reported = false;
    loop {
        match ConsoleClient::attach(region, notifier.clone(), 100) {
            Ok(console) => return console,
            Err(e) => {
                if !reported {
                    println!("{channel}: waiting for the console server ({e:?})");
                    reported = true;
                }
                sleep_until(time_now_ns() + 100_000_000);
            }
        }
    }
}

/// Printable text of host input, for the kernel log.
fn printable(input: &[u8], out: &mut [u8; 128]) -> usize {
    let mut n = 0;
    for &b in input.iter().take(out.len()) {
        out[n] = if (0x20..0x7f).contains(&b) { b } else { b'.' };
        n += 1;
    }
    n
}

fn main() {
    let mut text = [0u8; 1024];
    // The settings were checked against config-schema.toml and every default filled in when
    // the image was built: a missing one means a broken image (said, and we stop).
    let Some(config) = rt::config::load(&mut text) else {
        return;
    };
    let (Some(channel), Some(period_ms), Some(flood)) = (
        config.need("channel"),
        config.need_u64("period-ms"),
        config.need_bool("flood"),
    ) else {
        return;
    };
    let period_ns = period_ms * 1_000_000;
    let Some((_, memory, notifier)) = iokit::client_attach(&config) else {
        return;
    };
    let mut console = connect(memory, &notifier, channel);
    let greeting = line!("hello from {channel}: this is its own console; type a line\r\n");
    match console.write(greeting.bytes()) {
        Ok(()) => println!("{channel}: console attached; greeting written"),
        Err(e) => println!("{channel}: greeting failed: {e:?}"),
    }

    let started = time_now_ns();
    let mut next_line = started + period_ns;
    let mut next_report = started + 1_000_000_000;
    let mut line_no = 0u64;
    let mut flooded = greeting.len as u64;
    let mut input = [0u8; 128];
    loop {
        let result = (|| -> Result<(), ConsoleError> {
            let n = console.read(&mut input)?;
            if n > 0 {
                let mut shown = [0u8; 128];
                let k = printable(&input[..n], &mut shown);
                let text = core::str::from_utf8(&shown[..k]).unwrap_or("");
                println!("{channel}: the host typed {n} bytes: \"{text}\"");
                console.write(line!("{channel} echo: ").bytes())?;
                console.write(&input[..n])?;
                if !input[..n].ends_with(b"\n") {
                    console.write(b"\r\n")?;
                }
            }
            let now = time_now_ns();
            if flood {
                let l = line!(
                    "{channel} flood {line_no:08}: the quick brown fox jumps over the lazy dog\r\n"
                );
                line_no += 1;
                console.write(l.bytes())?;
                flooded += l.len as u64;
                if now >= next_report {
                    next_report = now + 1_000_000_000;
                    println!(
                        "{channel}: flood: {flooded} bytes written in {} ms",
                        (now - started) / 1_000_000
                    );
                }
            } else if now >= next_line {
                next_line = now + period_ns;
                line_no += 1;
                console.write(line!("{channel}: line {line_no}\r\n").bytes())?;
                if line_no == 1 || line_no.is_multiple_of(10) {
                    println!("{channel}: wrote line {line_no} to its console");
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => {}
            Err(e @ (ConsoleError::Reset | ConsoleError::NeedsReset)) => {
                println!("{channel}: console server gone ({e:?}); reconnecting");
                console = connect(memory, &notifier, channel);
            }
            Err(e) => println!("{channel}: console error {e:?}"),
        }
        if !flood {
            sleep_until(time_now_ns() + 10_000_000);
        }
    }
}
