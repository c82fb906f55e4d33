//! Configuration schemas: what each program accepts in its `[partitions.NAME.config]` table
//! and, for a server, in the `[channels.NAME.config]` tables of the channels it serves.
//!
//! A program declares its schema in `config-schema.toml` next to its `Cargo.toml`; a program
//! without that file accepts no settings. The format is documented in
//! `docs/system-description.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;
use toml::Spanned;

use crate::diag::{LineIndex, Pending, Report};

/// File name of a program's schema, next to its `Cargo.toml`.
pub const SCHEMA_FILE: &str = "config-schema.toml";

/// Folders (under the repository root) whose crates with a `src/main.rs` are programs.
pub const PROGRAM_DIRS: [&str; 2] = ["partitions", "servers"];

/// Longest setting name a schema may declare.
pub const MAX_KEY_LEN: usize = 48;

/// What a setting's value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyType {
    /// A TOML integer, optionally within `min..=max`.
    Integer,
    /// `true` or `false`.
    Bool,
    /// Any string.
    String,
    /// One of the strings in `values`.
    Enum,
    /// A unicast MAC address, `"52:54:00:12:34:56"`.
    Mac,
    /// A dotted-quad IPv4 address, `"10.0.2.2"`.
    Ipv4,
    /// An IPv4 address with a prefix length, `"10.0.2.15/24"`.
    Ipv4Cidr,
    /// The name of a channel the partition is the client or the server of.
    Channel,
    /// The name of a device granted to the partition.
    Device,
    /// The name of one of the partition's DMA regions.
    DmaRegion,
    /// The name of a shared region the partition maps.
    SharedRegion,
    /// The name of a notification the partition sends or receives.
    Notification,
}

impl KeyType {
    /// How the type is named in messages ("an integer", "a device name").
    pub fn describe(self) -> &'static str {
        match self {
            KeyType::Integer => "an integer",
            KeyType::Bool => "a boolean",
            KeyType::String | KeyType::Enum => "a string",
            KeyType::Mac => "a MAC address string",
            KeyType::Ipv4 => "an IPv4 address string",
            KeyType::Ipv4Cidr => "an IPv4 address/prefix string",
            KeyType::Channel => "a channel name",
            KeyType::Device => "a device name",
            KeyType::DmaRegion => "a DMA region name",
            KeyType::SharedRegion => "a shared region name",
            KeyType::Notification => "a notification name",
        }
    }

    /// For a reference, what it must name ("a channel of partition").
    pub(crate) fn reference_description(self) -> Option<&'static str> {
        match self {
            KeyType::Channel => Some("a channel of"),
            KeyType::Device => Some("a device granted to"),
            KeyType::DmaRegion => Some("a DMA region of"),
            KeyType::SharedRegion => Some("a shared region mapped by"),
            KeyType::Notification => Some("a notification sent or received by"),
            _ => None,
        }
    }
}

/// How deep schemas may extend each other.
pub const MAX_EXTENDS: usize = 4;

/// One setting a program accepts.
#[derive(Clone, Debug, PartialEq)]
pub struct KeySchema {
    pub ty: KeyType,
    /// What the setting does, for people.
    pub doc: String,
    /// The value used when the description gives none. A string default may contain
    /// `{KEY}`: the value of setting `KEY` of the same table (in a channel's table,
    /// `{channel}` is the channel's name).
    pub default: Option<toml::Value>,
    /// The description must give the setting.
    pub required: bool,
    pub min: Option<i64>,
    pub max: Option<i64>,
    /// The strings an `enum` accepts.
    pub values: Vec<String>,
    /// No two channels of one server may have the same value (channel settings only).
    pub unique: bool,
}

/// A program's configuration schema.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigSchema {
    /// Where it was read from (`None`: the program has no schema file: no settings).
    pub path: Option<PathBuf>,
    /// Settings of `[partitions.NAME.config]`, in declaration order.
    pub config: IndexMap<String, KeySchema>,
    /// Settings of `[channels.NAME.config]` of the channels the program serves.
    pub channel: IndexMap<String, KeySchema>,
    /// The schema this one extends (`extends = "PATH"`, relative to this file): its settings
    /// come first, and a setting declared here again replaces its declaration there (a
    /// program's own default for a setting the I/O-server framework reads, say).
    pub extends: Option<PathBuf>,
    /// This file's `[defaults]`: new defaults for settings it inherits (key, value, where),
    /// applied when the schemas are merged.
    defaults: Vec<(String, toml::Value, Range<usize>)>,
    /// This file's text, kept only while `defaults` wait to be checked.
    text: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchema {
    extends: Option<String>,
    #[serde(default)]
    defaults: IndexMap<Spanned<String>, Spanned<toml::Value>>,
    #[serde(default)]
    config: IndexMap<Spanned<String>, Spanned<RawKey>>,
    #[serde(default)]
    channel: IndexMap<Spanned<String>, Spanned<RawKey>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawKey {
    #[serde(rename = "type")]
    ty: Spanned<KeyType>,
    doc: String,
    default: Option<Spanned<toml::Value>>,
    #[serde(default)]
    required: Option<Spanned<bool>>,
    min: Option<Spanned<i64>>,
    max: Option<Spanned<i64>>,
    values: Option<Spanned<Vec<String>>>,
    unique: Option<Spanned<bool>>,
}

impl ConfigSchema {
    /// Parses and checks schema text; `path` is used in diagnostics.
    pub fn parse(path: &Path, text: &str) -> Result<ConfigSchema, Report> {
        let mut pending = Vec::new();
        let schema = match toml::from_str::<RawSchema>(text) {
            Ok(raw) => {
                let config = section(&raw.config, false, &mut pending);
                let channel = section(&raw.channel, true, &mut pending);
                let extends = raw
                    .extends
                    .map(|base| path.parent().unwrap_or_else(|| Path::new(".")).join(base));
                let defaults: Vec<_> = raw
                    .defaults
                    .iter()
                    .map(|(k, v)| (k.get_ref().clone(), v.get_ref().clone(), v.span()))
                    .collect();
                let text = if defaults.is_empty() {
                    String::new()
                } else {
                    text.to_owned()
                };
                Some(ConfigSchema {
                    path: Some(path.to_path_buf()),
                    config,
                    channel,
                    extends,
                    defaults,
                    text,
                })
            }
            Err(e) => {
                let message = e
                    .message()
                    .trim_end()
                    .replace("expected a map", "expected a table")
                    .replace("invalid type: map,", "invalid type: table,");
                pending.push(Pending::error(e.span().unwrap_or(0..0), message));
                None
            }
        };
        match schema {
            Some(schema) if pending.is_empty() => Ok(schema),
            _ => {
                let index = LineIndex::new(text);
                Err(Report {
                    file: path.to_path_buf(),
                    source: text.to_owned(),
                    diagnostics: pending.into_iter().map(|p| index.finish(path, p)).collect(),
                })
            }
        }
    }

    /// Reads and checks a schema file, with the schemas it extends (at most
    /// [`MAX_EXTENDS`] deep).
    pub fn load(path: &Path) -> Result<ConfigSchema, Report> {
        Self::load_within(path, MAX_EXTENDS)
    }

    fn load_within(path: &Path, depth: usize) -> Result<ConfigSchema, Report> {
        let own = Self::load_one(path)?;
        let Some(base_path) = own.extends.clone() else {
            return Ok(own);
        };
        if depth == 0 {
            return Err(Report {
                file: path.to_path_buf(),
                source: String::new(),
                diagnostics: vec![LineIndex::new("").finish(
                    path,
                    Pending::error(
                        0..0,
                        format!("schemas extend each other more than {MAX_EXTENDS} deep"),
                    ),
                )],
            });
        }
        let mut merged = Self::load_within(&base_path, depth - 1)?;
        merged.path = own.path;
        merged.extends = own.extends;
        merged.config.extend(own.config);
        merged.channel.extend(own.channel);
        let mut pending = Vec::new();
        for (key, value, span) in own.defaults {
            let Some(setting) = merged.config.get_mut(&key) else {
                pending.push(Pending::error(
                    span,
                    format!("`{key}` is not a setting of the schema this one extends"),
                ));
                continue;
            };
            match check_value(setting, &value) {
                Ok(_) if !setting.required => setting.default = Some(value),
                Ok(_) => pending.push(Pending::error(
                    span,
                    format!("`{key}` is required: it has no default"),
                )),
                Err(e) => pending.push(Pending::error(span, format!("bad default: {e}"))),
            }
        }
        if pending.is_empty() {
            return Ok(merged);
        }
        let index = LineIndex::new(&own.text);
        Err(Report {
            file: path.to_path_buf(),
            source: own.text.clone(),
            diagnostics: pending.into_iter().map(|p| index.finish(path, p)).collect(),
        })
    }

    fn load_one(path: &Path) -> Result<ConfigSchema, Report> {
        match std::fs::read_to_string(path) {
            Ok(text) => ConfigSchema::parse(path, &text),
            Err(e) => Err(Report {
                file: path.to_path_buf(),
                source: String::new(),
                diagnostics: vec![LineIndex::new("").finish(
                    path,
                    Pending::error(0..0, format!("cannot read the schema: {e}")),
                )],
            }),
        }
    }
}

fn section(
    raw: &IndexMap<Spanned<String>, Spanned<RawKey>>,
    channel: bool,
    out: &mut Vec<Pending>,
) -> IndexMap<String, KeySchema> {
    let mut keys = IndexMap::new();
    for (name, key) in raw {
        let ok_name = name.get_ref().len() <= MAX_KEY_LEN
            && name.get_ref().starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .get_ref()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok_name {
            out.push(Pending::error(
                name.span(),
                format!(
                    "invalid setting name \"{}\": use lowercase letters, digits and '-', \
                     starting with a letter, at most {MAX_KEY_LEN} characters",
                    name.get_ref()
                ),
            ));
        }
        let k = key.get_ref();
        let ty = *k.ty.get_ref();
        let err = |out: &mut Vec<Pending>, span: Range<usize>, m: String| {
            out.push(Pending::error(span, m));
        };
        if let (Some(min), Some(max)) = (&k.min, &k.max)
            && min.get_ref() > max.get_ref()
        {
            err(out, max.span(), "max is smaller than min".into());
        }
        for bound in [&k.min, &k.max].into_iter().flatten() {
            if ty != KeyType::Integer {
                err(
                    out,
                    bound.span(),
                    "min and max apply to integers only".into(),
                );
            }
        }
        match (&k.values, ty) {
            (Some(v), KeyType::Enum) if v.get_ref().is_empty() => {
                err(out, v.span(), "an enum needs at least one value".into());
            }
            (Some(_), KeyType::Enum) => {}
            (None, KeyType::Enum) => err(out, k.ty.span(), "an enum needs `values`".into()),
            (Some(v), _) => err(out, v.span(), "values apply to enums only".into()),
            (None, _) => {}
        }
        if let Some(u) = &k.unique
            && !channel
        {
            err(
                out,
                u.span(),
                "unique applies to channel settings only".into(),
            );
        }
        let required = k.required.as_ref().is_some_and(|r| *r.get_ref());
        if let (Some(r), Some(_)) = (&k.required, &k.default)
            && *r.get_ref()
        {
            err(
                out,
                r.span(),
                "a setting with a default cannot be required".into(),
            );
        }
        let schema = KeySchema {
            ty,
            doc: k.doc.clone(),
            default: k.default.as_ref().map(|d| d.get_ref().clone()),
            required,
            min: k.min.as_ref().map(|m| *m.get_ref()),
            max: k.max.as_ref().map(|m| *m.get_ref()),
            values: k
                .values
                .as_ref()
                .map_or(Vec::new(), |v| v.get_ref().clone()),
            unique: k.unique.as_ref().is_some_and(|u| *u.get_ref()),
        };
        if let Some(default) = &k.default {
            let value = default.get_ref();
            match value.as_str().filter(|s| s.contains('{')) {
                Some(template) => {
                    if ty.reference_description().is_none() && ty != KeyType::String {
                        err(
                            out,
                            default.span(),
                            "only string and reference settings may have a `{KEY}` default".into(),
                        );
                    }
                    for placeholder in placeholders(template) {
                        let known = (channel && placeholder == "channel")
                            || raw.iter().any(|(n, other)| {
                                n.get_ref() == placeholder
                                    && other.get_ref().default.as_ref().is_none_or(|d| {
                                        d.get_ref().as_str().is_none_or(|s| !s.contains('{'))
                                    })
                            });
                        if !known {
                            err(
                                out,
                                default.span(),
                                format!(
                                    "the default names {{{placeholder}}}, which is not a \
                                     setting without a `{{KEY}}` default in this table"
                                ),
                            );
                        }
                    }
                }
                None => {
                    if let Err(e) = check_value(&schema, value) {
                        err(out, default.span(), format!("bad default: {e}"));
                    }
                }
            }
        }
        keys.insert(name.get_ref().clone(), schema);
    }
    keys
}

/// The `{NAME}` placeholders of a template.
pub(crate) fn placeholders(template: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            out.push("");
            break;
        };
        out.push(&rest[open + 1..open + close]);
        rest = &rest[open + close + 1..];
    }
    out
}

/// Expands a template with `lookup`.
pub(crate) fn expand(template: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        out.push_str(&rest[..open]);
        let name = &rest[open + 1..open + close];
        out.push_str(&lookup(name).unwrap_or_default());
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

/// Checks a value's type, range and form (not what a reference names): `Err` is the reason.
pub(crate) fn check_value(key: &KeySchema, value: &toml::Value) -> Result<(), String> {
    let found = || format!("found {}", describe_value(value));
    match (key.ty, value) {
        (KeyType::Integer, toml::Value::Integer(i)) => {
            if let Some(min) = key.min.filter(|m| i < m) {
                return Err(format!("{i} is below the smallest allowed, {min}"));
            }
            if let Some(max) = key.max.filter(|m| i > m) {
                return Err(format!("{i} is above the largest allowed, {max}"));
            }
            Ok(())
        }
        (KeyType::Bool, toml::Value::Boolean(_)) => Ok(()),
        (KeyType::Enum, toml::Value::String(s)) => {
            if key.values.contains(s) {
                Ok(())
            } else {
                Err(format!("\"{s}\" is not one of {}", list(&key.values)))
            }
        }
        (KeyType::Mac, toml::Value::String(m)) => {
            let octets = parse_mac(m).ok_or_else(|| {
                format!(
                    "invalid MAC address \"{m}\": expected six hex octets, e.g. \
                     \"52:54:00:12:34:56\""
                )
            })?;
            if octets[0] & 1 == 1 {
                return Err(format!("MAC address \"{m}\" is a multicast address"));
            }
            Ok(())
        }
        (KeyType::Ipv4, toml::Value::String(s)) => parse_ipv4(s).map(|_| ()).ok_or_else(|| {
            format!(
                "invalid IPv4 address \"{s}\": expected four decimal octets, e.g. \"10.0.2.15\""
            )
        }),
        (KeyType::Ipv4Cidr, toml::Value::String(s)) => s
            .split_once('/')
            .and_then(|(ip, prefix)| {
                parse_ipv4(ip)?;
                let p: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
                (prefix == p.to_string()).then_some(())
            })
            .ok_or_else(|| {
                format!(
                    "invalid IPv4 address with prefix \"{s}\": expected e.g. \"10.0.2.15/24\" \
                     (prefix 0 to 32)"
                )
            }),
        (
            KeyType::String
            | KeyType::Channel
            | KeyType::Device
            | KeyType::DmaRegion
            | KeyType::SharedRegion
            | KeyType::Notification,
            toml::Value::String(_),
        ) => Ok(()),
        (ty, _) => Err(format!("expected {}, {}", ty.describe(), found())),
    }
}

fn describe_value(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("string \"{s}\""),
        toml::Value::Integer(i) => format!("integer {i}"),
        toml::Value::Boolean(b) => format!("boolean {b}"),
        other => other.type_str().to_owned(),
    }
}

/// `"a"`, `"a" or "b"`, `"a", "b" or "c"`.
pub(crate) fn list(items: &[impl AsRef<str>]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| format!("\"{}\"", s.as_ref()))
        .collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

fn parse_mac(m: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = m.split(':');
    for slot in &mut out {
        let o = parts.next().filter(|o| o.len() == 2)?;
        *slot = u8::from_str_radix(o, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

fn parse_ipv4(s: &str) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut parts = s.split('.');
    for slot in &mut out {
        let o = parts.next()?;
        if o.is_empty() || o.len() > 3 || !o.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *slot = o.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// The closest of `candidates` to `word` if it is close enough to be a likely typo.
pub(crate) fn suggest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .map(|c| (distance(word, c), c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The programs a description may name and the configuration each accepts.
#[derive(Clone, Debug, Default)]
pub struct Programs {
    /// `None`: program names are not checked.
    names: Option<BTreeSet<String>>,
    /// Schemas by program; a program without one has its settings passed on unchecked.
    schemas: BTreeMap<String, ConfigSchema>,
}

impl Programs {
    /// Checks neither program names nor settings.
    pub fn unchecked() -> Self {
        Programs::default()
    }

    /// A known set of program names, without schemas (settings are not checked).
    pub fn known<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Programs {
            names: Some(names.into_iter().map(Into::into).collect()),
            schemas: BTreeMap::new(),
        }
    }

    /// Adds (or replaces) the schema of `program`, which becomes a known name if names are
    /// checked.
    pub fn with_schema(mut self, program: impl Into<String>, schema: ConfigSchema) -> Self {
        let program = program.into();
        if let Some(names) = &mut self.names {
            names.insert(program.clone());
        }
        self.schemas.insert(program, schema);
        self
    }

    /// The programs of the repository at `root`: the package of every crate under
    /// `partitions/` and `servers/` with a `src/main.rs`, each with the schema in its
    /// [`SCHEMA_FILE`] (none: no settings). Fails with the reports of broken schema files.
    pub fn discover(root: &Path) -> Result<Programs, Vec<Report>> {
        let mut programs = Programs::known(Vec::<String>::new());
        let mut errors = Vec::new();
        for (name, dir) in program_dirs(root) {
            let path = dir.join(SCHEMA_FILE);
            let schema = if path.exists() {
                match ConfigSchema::load(&path) {
                    Ok(s) => s,
                    Err(report) => {
                        errors.push(report);
                        continue;
                    }
                }
            } else {
                ConfigSchema::default()
            };
            programs = programs.with_schema(name, schema);
        }
        if errors.is_empty() {
            Ok(programs)
        } else {
            Err(errors)
        }
    }

    /// The known program names (`None`: unchecked).
    pub fn names(&self) -> Option<&BTreeSet<String>> {
        self.names.as_ref()
    }

    /// The schema of `program`, if settings are checked for it.
    pub fn schema(&self, program: &str) -> Option<&ConfigSchema> {
        self.schemas.get(program)
    }
}

/// `(package name, crate folder)` of every program crate under `root`, sorted by name.
pub fn program_dirs(root: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for dir in PROGRAM_DIRS {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            if !entry.path().join("src/main.rs").exists() {
                continue;
            }
            let manifest =
                std::fs::read_to_string(entry.path().join("Cargo.toml")).unwrap_or_default();
            let name = manifest
                .parse::<toml::Table>()
                .ok()
                .and_then(|t| t.get("package")?.get("name")?.as_str().map(str::to_owned))
                .unwrap_or_else(|| entry.file_name().to_string_lossy().into_owned());
            out.push((name, entry.path()));
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `files` into a fresh folder under the target directory; its path.
    fn folder(name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("sysdesc-schema-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (file, text) in files {
            std::fs::write(dir.join(file), text).unwrap();
        }
        dir
    }

    const BASE: &str = "[config.dma]\ntype = \"dma-region\"\ndoc = \"d\"\ndefault = \"queues\"\n\n\
        [config.report-ms]\ntype = \"integer\"\ndoc = \"r\"\nmin = 0\nmax = 100\ndefault = 0\n\n\
        [channel.irq]\ntype = \"notification\"\ndoc = \"i\"\ndefault = \"{channel}-irq\"\n";

    #[test]
    fn a_schema_extends_another_and_gives_its_own_defaults() {
        let child = "extends = \"base.toml\"\n\n[defaults]\nreport-ms = 50\n\n\
            [config.nic]\ntype = \"device\"\ndoc = \"n\"\ndefault = \"net0\"\n";
        let dir = folder("ok", &[("base.toml", BASE), ("child.toml", child)]);
        let schema = ConfigSchema::load(&dir.join("child.toml")).unwrap();
        let keys: Vec<_> = schema.config.keys().map(String::as_str).collect();
        assert_eq!(keys, ["dma", "report-ms", "nic"]);
        assert_eq!(
            schema.config["report-ms"].default,
            Some(toml::Value::Integer(50))
        );
        assert_eq!(
            schema.config["dma"].default,
            Some(toml::Value::String("queues".into()))
        );
        assert!(schema.channel.contains_key("irq"));
    }

    #[test]
    fn a_default_for_no_inherited_setting_or_out_of_range_is_refused_with_its_line() {
        let child = "extends = \"base.toml\"\n\n[defaults]\nreport-ms = 500\nreprot-ms = 5\n";
        let dir = folder("bad", &[("base.toml", BASE), ("child.toml", child)]);
        let report = ConfigSchema::load(&dir.join("child.toml")).unwrap_err();
        let text = format!("{report:?}");
        assert_eq!(report.diagnostics.len(), 2, "{text}");
        assert!(text.contains("bad default"), "{text}");
        assert!(
            text.contains("`reprot-ms` is not a setting of the schema this one extends"),
            "{text}"
        );
    }

    #[test]
    fn schemas_that_extend_each_other_in_a_loop_are_refused() {
        let dir = folder(
            "loop",
            &[
                ("a.toml", "extends = \"b.toml\"\n"),
                ("b.toml", "extends = \"a.toml\"\n"),
            ],
        );
        let report = ConfigSchema::load(&dir.join("a.toml")).unwrap_err();
        assert!(format!("{report:?}").contains("more than"), "{report:?}");
    }

    #[test]
    fn suggestions_and_distance() {
        assert_eq!(distance("queue-dept", "queue-depth"), 1);
        assert_eq!(distance("", "ab"), 2);
        let keys = ["queue-depth", "dma", "disk"];
        assert_eq!(suggest("queue-dept", keys.into_iter()), Some("queue-depth"));
        assert_eq!(suggest("dsk", keys.into_iter()), Some("disk"));
        assert_eq!(suggest("colour", keys.into_iter()), None);
    }

    #[test]
    fn templates() {
        assert_eq!(placeholders("{channel}-kick"), ["channel"]);
        assert_eq!(
            expand("{channel}-kick", |n| (n == "channel").then(|| "web".into())),
            "web-kick"
        );
        assert_eq!(list(&["a", "b", "c"]), "\"a\", \"b\" or \"c\"");
    }

    #[test]
    fn value_forms() {
        let key = |ty| KeySchema {
            ty,
            doc: String::new(),
            default: None,
            required: false,
            min: Some(1),
            max: Some(10),
            values: vec!["x".into()],
            unique: false,
        };
        let s = |v: &str| toml::Value::String(v.into());
        assert!(check_value(&key(KeyType::Integer), &toml::Value::Integer(10)).is_ok());
        assert!(check_value(&key(KeyType::Integer), &toml::Value::Integer(11)).is_err());
        assert!(check_value(&key(KeyType::Integer), &s("1")).is_err());
        assert!(check_value(&key(KeyType::Enum), &s("x")).is_ok());
        assert!(check_value(&key(KeyType::Mac), &s("52:54:00:12:34:56")).is_ok());
        assert!(check_value(&key(KeyType::Mac), &s("52:54:00:12:34")).is_err());
        assert!(check_value(&key(KeyType::Mac), &s("52:54:00:12:34:56:78")).is_err());
        assert!(check_value(&key(KeyType::Ipv4), &s("10.0.2.2")).is_ok());
        assert!(check_value(&key(KeyType::Ipv4), &s("10.0.2.256")).is_err());
        assert!(check_value(&key(KeyType::Ipv4), &s("10.0.2")).is_err());
        assert!(check_value(&key(KeyType::Ipv4Cidr), &s("10.0.2.15/24")).is_ok());
        assert!(check_value(&key(KeyType::Ipv4Cidr), &s("10.0.2.15/33")).is_err());
        assert!(check_value(&key(KeyType::Ipv4Cidr), &s("10.0.2.15")).is_err());
        assert!(check_value(&key(KeyType::Device), &toml::Value::Integer(1)).is_err());
    }

    #[test]
    fn schema_files_are_checked() {
        let path = Path::new("s.toml");
        let ok = ConfigSchema::parse(
            path,
            "[config.depth]\ntype = \"integer\"\ndoc = \"d\"\nmin = 1\nmax = 8\ndefault = 4\n\
             [channel.region]\ntype = \"shared-region\"\ndoc = \"r\"\ndefault = \"{channel}\"\n",
        )
        .unwrap();
        assert_eq!(ok.config["depth"].default, Some(toml::Value::Integer(4)));
        let messages = |text: &str| -> Vec<String> {
            ConfigSchema::parse(path, text)
                .unwrap_err()
                .diagnostics
                .iter()
                .map(|d| format!("{}:{}: {}", d.line, d.column, d.message))
                .collect()
        };
        assert_eq!(
            messages("[config.depth]\ntype = \"integer\"\ndoc = \"d\"\nmax = 8\ndefault = 9\n"),
            ["5:11: bad default: 9 is above the largest allowed, 8"]
        );
        assert_eq!(
            messages("[config.depth]\ntype = \"integr\"\ndoc = \"d\"\n")[0]
                .split(',')
                .next()
                .unwrap(),
            "2:8: unknown variant `integr`"
        );
        assert_eq!(
            messages("[config.depth]\ntype = \"integer\"\ndoc = \"d\"\nrange = 3\n")[0]
                .split(',')
                .next()
                .unwrap(),
            "4:1: unknown field `range`"
        );
        assert_eq!(
            messages(
                "[config.kick]\ntype = \"notification\"\ndoc = \"d\"\ndefault = \"{chan}-kick\"\n"
            ),
            [
                "4:11: the default names {chan}, which is not a setting without a `{KEY}` default in this table"
            ]
        );
        assert_eq!(
            messages("[config.mode]\ntype = \"enum\"\ndoc = \"d\"\n"),
            ["2:8: an enum needs `values`"]
        );
    }
}
