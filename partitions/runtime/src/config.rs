//! The partition's configuration text, as `partition_config` returns it: one `key = value`
//! line per setting. The partition's own `[partitions.NAME.config]` keys appear plain; for a
//! server, every channel it serves contributes `channels.CHANNEL.KEY = value` lines. Values are
//! TOML values: strings are quoted, integers may be hex (`0x…`), octal (`0o…`), binary (`0b…`)
//! and use `_` separators.
//!
//! ```ignore
//! let mut buf = [0u8; 1024];
//! let config = bulkhead_rt::config::read(&mut buf)?;
//! let depth = config.get_u64("queue-depth").unwrap_or(64);
//! for channel in config.channels() {
//!     let start = config.channel_u64(channel, "lba-start");
//! }
//! ```
//!
//! Nothing here allocates; strings are not unescaped (a value is the text between its quotes).

/// A parsed view of configuration text.
#[derive(Clone, Copy, Debug)]
pub struct Config<'t> {
    text: &'t str,
}

/// Reads this partition's configuration into `buf`. Fails with `BadArgument` if the text does
/// not fit (its full length is larger than `buf`) or is not UTF-8.
#[cfg(target_os = "none")]
pub fn read(buf: &mut [u8]) -> Result<Config<'_>, abi::SysError> {
    let len = crate::syscall::partition_config(buf)?;
    let text = buf.get(..len).ok_or(abi::SysError::BadArgument)?;
    let text = core::str::from_utf8(text).map_err(|_| abi::SysError::BadArgument)?;
    Ok(Config::new(text))
}

impl<'t> Config<'t> {
    /// Wraps configuration text.
    pub fn new(text: &'t str) -> Self {
        Self { text }
    }

    /// Every `(key, raw value)` pair in order; blank lines, `#` comments and lines without
    /// `=` are skipped. Keys and raw values are trimmed; raw string values keep their quotes.
    pub fn entries(&self) -> impl Iterator<Item = (&'t str, &'t str)> + 't {
        self.text.lines().filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let (key, value) = line.split_once('=')?;
            Some((key.trim(), value.trim()))
        })
    }

    /// The raw value of `key` (quotes kept); the last occurrence wins, as a later line
    /// overrides an earlier one.
    pub fn raw(&self, key: &str) -> Option<&'t str> {
        self.entries()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
            .last()
    }

    /// The value of `key` as text, quotes stripped.
    pub fn get(&self, key: &str) -> Option<&'t str> {
        self.raw(key).map(unquote)
    }

    /// The value of `key` as an unsigned integer; `None` if absent or not an integer.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.raw(key).and_then(parse_u64)
    }

    /// The value of `key` as a boolean (`true`/`false`).
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        match self.raw(key)? {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }

    /// The raw value of `channels.CHANNEL.KEY`.
    pub fn channel_raw(&self, channel: &str, key: &str) -> Option<&'t str> {
        self.entries()
            .filter(|(k, _)| split_channel_key(k) == Some((channel, key)))
            .map(|(_, v)| v)
            .last()
    }

    /// `channels.CHANNEL.KEY` as text, quotes stripped.
    pub fn channel_get(&self, channel: &str, key: &str) -> Option<&'t str> {
        self.channel_raw(channel, key).map(unquote)
    }

    /// `channels.CHANNEL.KEY` as an unsigned integer.
    pub fn channel_u64(&self, channel: &str, key: &str) -> Option<u64> {
        self.channel_raw(channel, key).and_then(parse_u64)
    }

    /// The channels that have configuration lines, each once, in order of first appearance.
    pub fn channels(&self) -> impl Iterator<Item = &'t str> + 't {
        let this = *self;
        self.entries().enumerate().filter_map(move |(i, (key, _))| {
            let (channel, _) = split_channel_key(key)?;
            let seen_before = this
                .entries()
                .take(i)
                .any(|(k, _)| split_channel_key(k).is_some_and(|(c, _)| c == channel));
            (!seen_before).then_some(channel)
        })
    }
}

/// Splits `channels.CHANNEL.KEY` into `(CHANNEL, KEY)`. Channel names have no dots; keys may.
pub fn split_channel_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("channels.")?;
    let (channel, key) = rest.split_once('.')?;
    (!channel.is_empty() && !key.is_empty()).then_some((channel, key))
}

/// A raw value with one pair of surrounding quotes (`"…"` or `'…'`) removed.
pub fn unquote(raw: &str) -> &str {
    let raw = raw.trim();
    for quote in ['"', '\''] {
        if let Some(inner) = raw
            .strip_prefix(quote)
            .and_then(|rest| rest.strip_suffix(quote))
        {
            return inner;
        }
    }
    raw
}

/// Parses a TOML integer that is not negative: decimal, `0x`, `0o` or `0b`, with `_`
/// separators between digits and an optional `+`. Quoted integers are accepted too.
pub fn parse_u64(raw: &str) -> Option<u64> {
    let text = unquote(raw);
    let text = text.strip_prefix('+').unwrap_or(text);
    let (digits, radix) = if let Some(d) = text.strip_prefix("0x") {
        (d, 16)
    } else if let Some(d) = text.strip_prefix("0o") {
        (d, 8)
    } else if let Some(d) = text.strip_prefix("0b") {
        (d, 2)
    } else {
        (text, 10)
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    let mut value: u64 = 0;
    for c in digits.chars().filter(|&c| c != '_') {
        let digit = c.to_digit(radix)?;
        value = value
            .checked_mul(u64::from(radix))?
            .checked_add(u64::from(digit))?;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "queue-depth = 64\n\
        name = \"blk\"\n\
        # a comment\n\
        \n\
        channels.storage-disk.disk = \"disk0\"\n\
        channels.storage-disk.lba-start = 0\n\
        channels.storage-disk.lba-count = 65_536\n\
        channels.storage-disk.access = \"read-write\"\n\
        channels.control-disk.lba-start = 0x1_0000\n\
        channels.control-disk.access = 'read-only'\n\
        verbose = true\n\
        garbage line\n";

    #[test]
    fn plain_keys() {
        let c = Config::new(TEXT);
        assert_eq!(c.get_u64("queue-depth"), Some(64));
        assert_eq!(c.get("name"), Some("blk"));
        assert_eq!(c.raw("name"), Some("\"blk\""));
        assert_eq!(c.get_bool("verbose"), Some(true));
        assert_eq!(c.get("missing"), None);
        assert_eq!(c.get_u64("name"), None);
        assert_eq!(c.get("garbage line"), None);
    }

    #[test]
    fn channel_keys() {
        let c = Config::new(TEXT);
        let mut channels = c.channels();
        assert_eq!(channels.next(), Some("storage-disk"));
        assert_eq!(channels.next(), Some("control-disk"));
        assert_eq!(channels.next(), None);
        assert_eq!(c.channel_get("storage-disk", "disk"), Some("disk0"));
        assert_eq!(c.channel_u64("storage-disk", "lba-count"), Some(65536));
        assert_eq!(c.channel_u64("control-disk", "lba-start"), Some(0x10000));
        assert_eq!(c.channel_get("control-disk", "access"), Some("read-only"));
        assert_eq!(c.channel_get("control-disk", "disk"), None);
        assert_eq!(c.channel_get("storage", "disk"), None);
    }

    #[test]
    fn integers() {
        assert_eq!(parse_u64("0"), Some(0));
        assert_eq!(parse_u64("+17"), Some(17));
        assert_eq!(parse_u64("1_000"), Some(1000));
        assert_eq!(parse_u64("0xff"), Some(255));
        assert_eq!(parse_u64("0o17"), Some(15));
        assert_eq!(parse_u64("0b101"), Some(5));
        assert_eq!(parse_u64("\"42\""), Some(42));
        assert_eq!(parse_u64("18446744073709551615"), Some(u64::MAX));
        for bad in [
            "",
            "-1",
            "_1",
            "1_",
            "1__0",
            "0x",
            "12a",
            "1.5",
            "18446744073709551616",
            "true",
        ] {
            assert_eq!(parse_u64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn last_line_wins_and_quotes() {
        let c = Config::new("a = 1\na = 2\nb = \"x = y\"\n");
        assert_eq!(c.get_u64("a"), Some(2));
        assert_eq!(c.get("b"), Some("x = y"));
        assert_eq!(unquote("\"unterminated"), "\"unterminated");
        assert_eq!(split_channel_key("channels..x"), None);
        assert_eq!(split_channel_key("channels.a.b.c"), Some(("a", "b.c")));
    }
}
