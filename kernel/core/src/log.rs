//! Log levels and the filter that decides what reaches the serial console.

use core::fmt;

/// Severity of a log record, most severe first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

impl Level {
    /// Parses a level name as written on the command line (`log=debug`).
    pub fn parse(name: &str) -> Option<Level> {
        Some(match name {
            "error" => Level::Error,
            "warn" => Level::Warn,
            "info" => Level::Info,
            "debug" => Level::Debug,
            "trace" => Level::Trace,
            _ => return None,
        })
    }

    /// The fixed-width tag printed in front of each record.
    pub fn tag(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warn => "WARN ",
            Level::Info => "INFO ",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        }
    }

    /// Converts the stored numeric form back; out-of-range values clamp to the nearest level.
    pub fn from_u8(value: u8) -> Level {
        match value {
            0 | 1 => Level::Error,
            2 => Level::Warn,
            3 => Level::Info,
            4 => Level::Debug,
            _ => Level::Trace,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tag().trim_end())
    }
}

/// Writes a record's prefix: `[   12.345678] INFO  module: `, the time in seconds since boot.
pub fn write_prefix(
    out: &mut dyn fmt::Write,
    uptime_ns: u64,
    level: Level,
    module: &str,
) -> fmt::Result {
    let secs = uptime_ns / 1_000_000_000;
    let micros = (uptime_ns % 1_000_000_000) / 1_000;
    let module = module.rsplit("::").next().unwrap_or(module);
    write!(out, "[{secs:5}.{micros:06}] {} {module}: ", level.tag())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::String;

    #[test]
    fn parse_round_trip() {
        for l in [
            Level::Error,
            Level::Warn,
            Level::Info,
            Level::Debug,
            Level::Trace,
        ] {
            assert_eq!(Level::parse(&l.to_string().to_lowercase()), Some(l));
            assert_eq!(Level::from_u8(l as u8), l);
        }
        assert_eq!(Level::parse("verbose"), None);
        assert!(Level::Error < Level::Trace);
    }

    #[test]
    fn prefix_format() {
        let mut s = String::new();
        write_prefix(
            &mut s,
            12_345_678_901,
            Level::Warn,
            "bulkhead_kernel::arch::x86_64::apic",
        )
        .unwrap();
        assert_eq!(s, "[   12.345678] WARN  apic: ");
    }
}
