//! Sizes and durations as written in a system description.
//!
//! Sizes are integers (bytes) or strings such as `"64 KiB"`, `"2 MiB"` or `"512 B"`: a whole
//! decimal number (`_` separators allowed), optional spaces, and one of the binary units `B`,
//! `KiB`, `MiB`, `GiB`. Durations are strings such as `"10 ms"` or `"500 us"` with one of the
//! units `ns`, `us` (or `µs`), `ms`, `s`; a bare integer is rejected because its unit would be a
//! guess. All durations resolve to nanoseconds.

/// One kibibyte.
pub const KIB: u64 = 1024;
/// One mebibyte.
pub const MIB: u64 = 1024 * KIB;
/// One gibibyte.
pub const GIB: u64 = 1024 * MIB;

const SIZE_UNITS: &[(&str, u64)] = &[("B", 1), ("KiB", KIB), ("MiB", MIB), ("GiB", GIB)];
const TIME_UNITS: &[(&str, u64)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
];

/// Splits `"64 KiB"` into the number and the unit text; errors name what is wrong.
fn split_number<'a>(text: &'a str, what: &str, example: &str) -> Result<(u64, &'a str), String> {
    let text = text.trim();
    let digits_end = text
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_digit() || c == '_'))
        .map_or(text.len(), |(i, _)| i);
    let (number, rest) = text.split_at(digits_end);
    if number.is_empty() || number.starts_with('_') {
        return Err(format!(
            "invalid {what} \"{text}\": expected a number and a unit, e.g. \"{example}\""
        ));
    }
    if rest.starts_with('.') || rest.starts_with(',') {
        return Err(format!(
            "invalid {what} \"{text}\": only whole numbers are allowed, e.g. \"{example}\""
        ));
    }
    let value = number
        .replace('_', "")
        .parse::<u64>()
        .map_err(|_| format!("{what} \"{text}\" is too large"))?;
    Ok((value, rest.trim_start()))
}

/// Parses a size string such as `"64 KiB"` into bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (value, unit) = split_number(text, "size", "64 KiB")?;
    let trimmed = text.trim();
    if unit.is_empty() {
        return Err(format!(
            "size \"{trimmed}\" has no unit: write an integer for bytes or add B, KiB, MiB or GiB"
        ));
    }
    let Some(&(_, scale)) = SIZE_UNITS.iter().find(|(name, _)| *name == unit) else {
        let hint = match unit.to_ascii_lowercase().as_str() {
            "k" | "kb" | "kib" => " (did you mean KiB?)",
            "m" | "mb" | "mib" => " (did you mean MiB?)",
            "g" | "gb" | "gib" => " (did you mean GiB?)",
            "b" | "byte" | "bytes" => " (did you mean B?)",
            _ => "",
        };
        return Err(format!(
            "unknown size unit \"{unit}\" in \"{trimmed}\"{hint}: use B, KiB, MiB or GiB"
        ));
    };
    value
        .checked_mul(scale)
        .ok_or_else(|| format!("size \"{trimmed}\" is too large"))
}

/// Parses a duration string such as `"10 ms"` into nanoseconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let (value, unit) = split_number(text, "duration", "10 ms")?;
    let trimmed = text.trim();
    if unit.is_empty() {
        return Err(format!(
            "duration \"{trimmed}\" has no unit: add ns, us, ms or s, e.g. \"{trimmed} ms\""
        ));
    }
    let Some(&(_, scale)) = TIME_UNITS.iter().find(|(name, _)| *name == unit) else {
        let hint = match unit.to_ascii_lowercase().as_str() {
            "msec" | "msecs" | "millis" => " (did you mean ms?)",
            "usec" | "usecs" | "micros" => " (did you mean us?)",
            "nsec" | "nsecs" | "nanos" => " (did you mean ns?)",
            "sec" | "secs" | "second" | "seconds" => " (did you mean s?)",
            _ => "",
        };
        return Err(format!(
            "unknown time unit \"{unit}\" in \"{trimmed}\"{hint}: use ns, us, ms or s"
        ));
    };
    value
        .checked_mul(scale)
        .ok_or_else(|| format!("duration \"{trimmed}\" is too large"))
}

/// Formats a byte count with the largest binary unit that divides it exactly.
pub fn format_size(bytes: u64) -> String {
    for &(name, scale) in SIZE_UNITS.iter().rev() {
        if scale > 1 && bytes != 0 && bytes.is_multiple_of(scale) {
            return format!("{} {name}", bytes / scale);
        }
    }
    format!("{bytes} B")
}

/// Formats nanoseconds with the largest unit that divides the value exactly (`0` is `0 ms`).
pub fn format_duration(ns: u64) -> String {
    if ns == 0 {
        return "0 ms".to_owned();
    }
    for &(name, scale) in TIME_UNITS.iter().rev() {
        if name != "µs" && ns.is_multiple_of(scale) {
            return format!("{} {name}", ns / scale);
        }
    }
    format!("{ns} ns")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64 KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("2MiB"), Ok(2 * 1024 * 1024));
        assert_eq!(parse_size(" 1 GiB "), Ok(1 << 30));
        assert_eq!(parse_size("512 B"), Ok(512));
        assert_eq!(parse_size("1_024 B"), Ok(1024));
        assert_eq!(parse_size("0 KiB"), Ok(0));
    }

    #[test]
    fn malformed_sizes() {
        assert_eq!(
            parse_size("64 KB").unwrap_err(),
            "unknown size unit \"KB\" in \"64 KB\" (did you mean KiB?): use B, KiB, MiB or GiB"
        );
        assert_eq!(
            parse_size("4096").unwrap_err(),
            "size \"4096\" has no unit: write an integer for bytes or add B, KiB, MiB or GiB"
        );
        assert_eq!(
            parse_size("1.5 MiB").unwrap_err(),
            "invalid size \"1.5 MiB\": only whole numbers are allowed, e.g. \"64 KiB\""
        );
        assert_eq!(
            parse_size("KiB").unwrap_err(),
            "invalid size \"KiB\": expected a number and a unit, e.g. \"64 KiB\""
        );
        assert_eq!(
            parse_size("-4 KiB").unwrap_err(),
            "invalid size \"-4 KiB\": expected a number and a unit, e.g. \"64 KiB\""
        );
        assert_eq!(
            parse_size("99999999999 GiB").unwrap_err(),
            "size \"99999999999 GiB\" is too large"
        );
        assert!(parse_size("4 KiBs").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10 ms"), Ok(10_000_000));
        assert_eq!(parse_duration("500 us"), Ok(500_000));
        assert_eq!(parse_duration("500µs"), Ok(500_000));
        assert_eq!(parse_duration("1 s"), Ok(1_000_000_000));
        assert_eq!(parse_duration("250 ns"), Ok(250));
    }

    #[test]
    fn malformed_durations() {
        assert_eq!(
            parse_duration("10").unwrap_err(),
            "duration \"10\" has no unit: add ns, us, ms or s, e.g. \"10 ms\""
        );
        assert_eq!(
            parse_duration("10 msec").unwrap_err(),
            "unknown time unit \"msec\" in \"10 msec\" (did you mean ms?): use ns, us, ms or s"
        );
        assert_eq!(
            parse_duration("ten ms").unwrap_err(),
            "invalid duration \"ten ms\": expected a number and a unit, e.g. \"10 ms\""
        );
        assert!(parse_duration("1.5 ms").is_err());
    }

    #[test]
    fn formatting() {
        assert_eq!(format_size(64 * 1024), "64 KiB");
        assert_eq!(format_size(3 * 1024 * 1024), "3 MiB");
        assert_eq!(format_size(1536), "1536 B");
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_duration(10_000_000), "10 ms");
        assert_eq!(format_duration(500_000), "500 us");
        assert_eq!(format_duration(1_500), "1500 ns");
        assert_eq!(format_duration(2_000_000_000), "2 s");
        assert_eq!(format_duration(0), "0 ms");
    }
}
