//! The partition's configuration, as `partition_config` returns it.
//!
//! The image builder validates every `[partitions.NAME.config]` and `[channels.NAME.config]`
//! table against the program's schema (`config-schema.toml` next to its `Cargo.toml`, see
//! docs/system-description.md) and fills in every default, so what arrives here is complete
//! and typed: a program needs no defaults of its own. The encoding is a sequence of records
//! after the four bytes [`MAGIC`]:
//!
//! ```text
//! tag (1) | key length (1) | value length (2, little-endian) | key | value
//! ```
//!
//! with tags [`tag::INT`] (value: 8-byte little-endian `i64`), [`tag::BOOL`] (1 byte, 0 or 1),
//! [`tag::STR`] (UTF-8) and [`tag::CHANNEL`] (key: a channel's name, no value). The
//! partition's own settings come first; for a server, each channel it serves follows as a
//! `CHANNEL` record and that channel's settings.
//!
//! For host tests (and older images) [`Config::new`] also reads the text form, one
//! `key = value` line per setting with channel settings as `channels.CHANNEL.KEY = value`
//! and values in TOML syntax.
//!
//! ```ignore
//! let mut buf = [0u8; 1024];
//! let config = bulkhead_rt::config::read(&mut buf)?;
//! let depth = config.get_u64("queue-depth");
//! for channel in config.channels() {
//!     let start = config.channel_u64(channel, "lba-start");
//! }
//! ```
//!
//! Nothing here allocates.

/// First bytes of the typed encoding.
pub const MAGIC: [u8; 4] = *b"BHC\x01";

/// Record tags of the typed encoding.
pub mod tag {
    /// Starts the settings of the channel named by the key.
    pub const CHANNEL: u8 = 0;
    /// A signed integer: 8 bytes, little-endian.
    pub const INT: u8 = 1;
    /// A boolean: one byte, 0 or 1.
    pub const BOOL: u8 = 2;
    /// A string: UTF-8 bytes.
    pub const STR: u8 = 3;
}

/// A setting's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value<'t> {
    Int(i64),
    Bool(bool),
    Str(&'t str),
    /// A value of the text form, as written (strings keep their quotes).
    Text(&'t str),
}

impl<'t> Value<'t> {
    /// The value as text: a string (quotes stripped in the text form), or `None`.
    pub fn as_str(self) -> Option<&'t str> {
        match self {
            Value::Str(s) => Some(s),
            Value::Text(raw) => Some(unquote(raw)),
            Value::Int(_) | Value::Bool(_) => None,
        }
    }

    /// The value as a non-negative integer.
    pub fn as_u64(self) -> Option<u64> {
        match self {
            Value::Int(i) => u64::try_from(i).ok(),
            Value::Text(raw) => parse_u64(raw),
            Value::Str(_) | Value::Bool(_) => None,
        }
    }

    /// The value as an integer.
    pub fn as_i64(self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(i),
            Value::Text(raw) => match raw.trim().strip_prefix('-') {
                Some(digits) => parse_u64(digits).and_then(|v| 0i64.checked_sub_unsigned(v)),
                None => parse_u64(raw).and_then(|v| i64::try_from(v).ok()),
            },
            Value::Str(_) | Value::Bool(_) => None,
        }
    }

    /// The value as a boolean.
    pub fn as_bool(self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(b),
            Value::Text("true") => Some(true),
            Value::Text("false") => Some(false),
            _ => None,
        }
    }
}

/// The configuration bytes are not a well-formed encoding (or the text is not UTF-8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed;

#[derive(Clone, Copy, Debug)]
enum Source<'t> {
    Text(&'t str),
    /// Checked records, without the magic.
    Records(&'t [u8]),
}

/// A parsed view of a partition's configuration.
#[derive(Clone, Copy, Debug)]
pub struct Config<'t> {
    source: Source<'t>,
}

/// Reads this partition's configuration into `buf`. Fails with `BadArgument` if it does not
/// fit (its full length is larger than `buf`) or is malformed.
#[cfg(target_os = "none")]
pub fn read(buf: &mut [u8]) -> Result<Config<'_>, abi::SysError> {
    let len = crate::syscall::partition_config(buf)?;
    let bytes = buf.get(..len).ok_or(abi::SysError::BadArgument)?;
    Config::from_bytes(bytes).map_err(|Malformed| abi::SysError::BadArgument)
}

/// Reads this partition's configuration as [`read`] does; `None`, said in the log, if it
/// cannot be read.
#[cfg(target_os = "none")]
pub fn load(buf: &mut [u8]) -> Option<Config<'_>> {
    read(buf)
        .inspect_err(|e| crate::println!("unreadable configuration ({e:?}); stopping"))
        .ok()
}

/// A setting the image always carries: its program's schema gives it a default or requires
/// it, and the image builder checked it. `None` only in an image built from an unchecked
/// description, which is said in the log (the caller then stops).
pub fn needed<T>(value: Option<T>, key: &str) -> Option<T> {
    if value.is_none() {
        crate::println!(
            "setting `{key}` is missing from the image (its description was not checked); stopping"
        );
    }
    value
}

/// One item of a configuration, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Item<'t> {
    /// The settings of this channel follow (typed encoding only).
    Channel(&'t str),
    Setting {
        channel: Option<&'t str>,
        key: &'t str,
        value: Value<'t>,
    },
}

struct Items<'t> {
    source: Source<'t>,
    /// Byte offset into the text or records.
    at: usize,
    /// The channel whose settings the records are in.
    channel: Option<&'t str>,
}

impl<'t> Iterator for Items<'t> {
    type Item = Item<'t>;

    fn next(&mut self) -> Option<Item<'t>> {
        match self.source {
            Source::Text(text) => loop {
                let rest = text.get(self.at..).filter(|r| !r.is_empty())?;
                let line_len = rest.find('\n').map_or(rest.len(), |i| i + 1);
                self.at += line_len;
                let line = rest[..line_len].trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let Some((key, value)) = line.split_once('=') else {
                    continue;
                };
                let (key, value) = (key.trim(), Value::Text(value.trim()));
                return Some(match split_channel_key(key) {
                    Some((channel, key)) => Item::Setting {
                        channel: Some(channel),
                        key,
                        value,
                    },
                    None => Item::Setting {
                        channel: None,
                        key,
                        value,
                    },
                });
            },
            Source::Records(bytes) => {
                let (record, len) = record(bytes.get(self.at..)?).ok()??;
                self.at += len;
                Some(match record {
                    (tag::CHANNEL, name, _) => {
                        self.channel = Some(name);
                        Item::Channel(name)
                    }
                    (_, key, value) => Item::Setting {
                        channel: self.channel,
                        key,
                        value,
                    },
                })
            }
        }
    }
}

/// Decodes the record at the start of `bytes`: `Ok(None)` at the end, else the record (tag,
/// key, value; the value of a `CHANNEL` record is unused) and its length.
#[allow(clippy::type_complexity)]
fn record(bytes: &[u8]) -> Result<Option<((u8, &str, Value<'_>), usize)>, Malformed> {
    let Some(header) = bytes.get(..4) else {
        return if bytes.is_empty() {
            Ok(None)
        } else {
            Err(Malformed)
        };
    };
    let (tag, key_len) = (header[0], usize::from(header[1]));
    let value_len = usize::from(u16::from_le_bytes([header[2], header[3]]));
    let key = bytes.get(4..4 + key_len).ok_or(Malformed)?;
    let key = core::str::from_utf8(key).map_err(|_| Malformed)?;
    let end = 4 + key_len + value_len;
    let value = bytes.get(4 + key_len..end).ok_or(Malformed)?;
    let value = match (tag, value) {
        (tag::CHANNEL, []) => Value::Str(""),
        (tag::INT, v) => Value::Int(i64::from_le_bytes(v.try_into().map_err(|_| Malformed)?)),
        (tag::BOOL, [0]) => Value::Bool(false),
        (tag::BOOL, [1]) => Value::Bool(true),
        (tag::STR, v) => Value::Str(core::str::from_utf8(v).map_err(|_| Malformed)?),
        _ => return Err(Malformed),
    };
    if key.is_empty() {
        return Err(Malformed);
    }
    Ok(Some(((tag, key, value), end)))
}

impl<'t> Config<'t> {
    /// Wraps configuration text (`key = value` lines).
    pub fn new(text: &'t str) -> Self {
        Self {
            source: Source::Text(text),
        }
    }

    /// An empty configuration.
    pub const EMPTY: Config<'static> = Config {
        source: Source::Records(&[]),
    };

    /// Reads what `partition_config` returned: the typed encoding if it starts with
    /// [`MAGIC`] (every record is checked here), else text. Empty bytes are an empty
    /// configuration.
    pub fn from_bytes(bytes: &'t [u8]) -> Result<Self, Malformed> {
        match bytes.strip_prefix(&MAGIC) {
            Some(records) => {
                let mut at = 0;
                while let Some((_, len)) = record(&records[at..])? {
                    at += len;
                }
                Ok(Self {
                    source: Source::Records(records),
                })
            }
            None => core::str::from_utf8(bytes)
                .map(Self::new)
                .map_err(|_| Malformed),
        }
    }

    fn items(&self) -> Items<'t> {
        Items {
            source: self.source,
            at: 0,
            channel: None,
        }
    }

    /// Every setting in order as `(channel, key, value)`: `channel` is `None` for the
    /// partition's own settings.
    pub fn entries(&self) -> impl Iterator<Item = (Option<&'t str>, &'t str, Value<'t>)> + 't {
        self.items().filter_map(|item| match item {
            Item::Setting {
                channel,
                key,
                value,
            } => Some((channel, key, value)),
            Item::Channel(_) => None,
        })
    }

    /// The value of the partition's own setting `key`; the last occurrence wins.
    pub fn value(&self, key: &str) -> Option<Value<'t>> {
        self.entries()
            .filter(|(c, k, _)| c.is_none() && *k == key)
            .map(|(_, _, v)| v)
            .last()
    }

    /// The value of setting `key` of `channel`; the last occurrence wins.
    pub fn channel_value(&self, channel: &str, key: &str) -> Option<Value<'t>> {
        self.entries()
            .filter(|(c, k, _)| *c == Some(channel) && *k == key)
            .map(|(_, _, v)| v)
            .last()
    }

    /// The value of `key` as text (a string setting; quotes stripped in the text form).
    pub fn get(&self, key: &str) -> Option<&'t str> {
        self.value(key)?.as_str()
    }

    /// The value of `key` as an unsigned integer; `None` if absent or not one.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.value(key)?.as_u64()
    }

    /// The value of `key` as a signed integer.
    pub fn get_i64(&self, key: &str) -> Option<i64> {
        self.value(key)?.as_i64()
    }

    /// The value of `key` as a boolean.
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.value(key)?.as_bool()
    }

    /// Setting `key` as text, which the image always carries ([`needed`]).
    pub fn need(&self, key: &str) -> Option<&'t str> {
        needed(self.get(key), key)
    }

    /// Setting `key` as an unsigned integer, which the image always carries ([`needed`]).
    pub fn need_u64(&self, key: &str) -> Option<u64> {
        needed(self.get_u64(key), key)
    }

    /// Setting `key` as a boolean, which the image always carries ([`needed`]).
    pub fn need_bool(&self, key: &str) -> Option<bool> {
        needed(self.get_bool(key), key)
    }

    /// Setting `key` of `channel` as text, which the image always carries ([`needed`]).
    pub fn channel_need(&self, channel: &str, key: &str) -> Option<&'t str> {
        needed(self.channel_get(channel, key), key)
    }

    /// Setting `key` of `channel` as text.
    pub fn channel_get(&self, channel: &str, key: &str) -> Option<&'t str> {
        self.channel_value(channel, key)?.as_str()
    }

    /// Setting `key` of `channel` as an unsigned integer.
    pub fn channel_u64(&self, channel: &str, key: &str) -> Option<u64> {
        self.channel_value(channel, key)?.as_u64()
    }

    /// Setting `key` of `channel` as a boolean.
    pub fn channel_bool(&self, channel: &str, key: &str) -> Option<bool> {
        self.channel_value(channel, key)?.as_bool()
    }

    /// The channels this partition serves (typed encoding: every one, with or without
    /// settings; text form: those with settings), each once, in order of first appearance.
    pub fn channels(&self) -> impl Iterator<Item = &'t str> + 't {
        let this = *self;
        let channel_of = |item: Item<'t>| match item {
            Item::Channel(c) => Some(c),
            Item::Setting { channel, .. } => channel,
        };
        self.items().enumerate().filter_map(move |(i, item)| {
            let channel = channel_of(item)?;
            let seen_before = this
                .items()
                .take(i)
                .any(|earlier| channel_of(earlier) == Some(channel));
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

    /// Appends one record of the typed encoding.
    fn push(out: &mut [u8], at: &mut usize, tag: u8, key: &str, value: &[u8]) {
        let mut put = |bytes: &[u8]| {
            out[*at..*at + bytes.len()].copy_from_slice(bytes);
            *at += bytes.len();
        };
        put(&[tag, key.len() as u8]);
        put(&(value.len() as u16).to_le_bytes());
        put(key.as_bytes());
        put(value);
    }

    fn records(out: &mut [u8]) -> usize {
        let mut at = 0;
        let mut push = |tag, key: &str, value: &[u8]| push(out, &mut at, tag, key, value);
        push(tag::INT, "queue-depth", &64i64.to_le_bytes());
        push(tag::STR, "name", b"blk");
        push(tag::BOOL, "verbose", &[1]);
        push(tag::INT, "offset", &(-3i64).to_le_bytes());
        push(tag::CHANNEL, "storage-disk", &[]);
        push(tag::STR, "disk", b"disk0");
        push(tag::INT, "lba-count", &65536i64.to_le_bytes());
        push(tag::CHANNEL, "quiet", &[]);
        push(tag::CHANNEL, "control-disk", &[]);
        push(tag::STR, "access", b"read-only");
        push(tag::BOOL, "verbose", &[0]);
        drop(push);
        at
    }

    #[test]
    fn plain_keys() {
        let c = Config::new(TEXT);
        assert_eq!(c.get_u64("queue-depth"), Some(64));
        assert_eq!(c.get("name"), Some("blk"));
        assert_eq!(c.value("name"), Some(Value::Text("\"blk\"")));
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
        // A channel's settings are not the partition's.
        assert_eq!(c.get("access"), None);
    }

    #[test]
    fn typed_records() {
        let mut buf = [0u8; 512];
        buf[..4].copy_from_slice(&MAGIC);
        let len = 4 + records(&mut buf[4..]);
        let c = Config::from_bytes(&buf[..len]).unwrap();
        assert_eq!(c.get_u64("queue-depth"), Some(64));
        assert_eq!(c.get("queue-depth"), None);
        assert_eq!(c.get("name"), Some("blk"));
        assert_eq!(c.get_u64("name"), None);
        assert_eq!(c.get_bool("verbose"), Some(true));
        assert_eq!(c.get_i64("offset"), Some(-3));
        assert_eq!(c.get_u64("offset"), None);
        assert_eq!(c.get("disk"), None);
        let channels: [Option<&str>; 4] = {
            let mut it = c.channels();
            [it.next(), it.next(), it.next(), it.next()]
        };
        assert_eq!(
            channels,
            [
                Some("storage-disk"),
                Some("quiet"),
                Some("control-disk"),
                None
            ]
        );
        assert_eq!(c.channel_get("storage-disk", "disk"), Some("disk0"));
        assert_eq!(c.channel_u64("storage-disk", "lba-count"), Some(65536));
        assert_eq!(c.channel_get("control-disk", "access"), Some("read-only"));
        assert_eq!(c.channel_bool("control-disk", "verbose"), Some(false));
        assert_eq!(c.channel_get("quiet", "disk"), None);
        assert_eq!(c.channel_get("control-disk", "disk"), None);
    }

    #[test]
    fn malformed_records_are_refused_whole() {
        let mut buf = [0u8; 512];
        buf[..4].copy_from_slice(&MAGIC);
        let len = 4 + records(&mut buf[4..]);
        for cut in 5..len {
            let c = Config::from_bytes(&buf[..cut]);
            // Only a cut at a record boundary leaves a well-formed encoding.
            if let Ok(c) = c {
                assert!(c.entries().count() < 9, "{cut}");
            }
        }
        assert_eq!(Config::from_bytes(&buf[..6]).err(), Some(Malformed));
        let mut bad = buf;
        bad[4] = 9; // unknown tag
        assert_eq!(Config::from_bytes(&bad[..len]).err(), Some(Malformed));
        let mut bad = buf;
        bad[6] = 7; // an integer of the wrong width
        assert!(Config::from_bytes(&bad[..len]).is_err());
        assert_eq!(Config::from_bytes(&MAGIC).unwrap().channels().count(), 0);
        assert_eq!(Config::from_bytes(b"").unwrap().get("x"), None);
        assert_eq!(Config::from_bytes(&[0xff, 0xfe]).err(), Some(Malformed));
        assert_eq!(Config::EMPTY.get("x"), None);
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
        assert_eq!(Value::Text("-5").as_i64(), Some(-5));
        assert_eq!(Value::Text("-9223372036854775808").as_i64(), Some(i64::MIN));
        assert_eq!(Value::Text("9223372036854775808").as_i64(), None);
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
