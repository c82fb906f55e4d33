//! Checks every `config` table against its program's schema and resolves it to the values the
//! partition receives: every setting given or defaulted, templates expanded.

use std::collections::HashMap;
use std::ops::Range;

use indexmap::IndexMap;
use toml::Spanned;

use crate::Programs;
use crate::diag::Pending;
use crate::model::{Channel, Partition};
use crate::raw::{Config, RawSystem};
use crate::schema::{KeySchema, KeyType, check_value, expand, list, placeholders, suggest};
use crate::validate::{Ctx, Resolved};

type Span = Range<usize>;

/// What the settings of one table may name.
#[derive(Default)]
struct Refs {
    channels: Vec<String>,
    devices: Vec<String>,
    dma: Vec<String>,
    shared: Vec<String>,
    notifications: Vec<String>,
}

impl Refs {
    fn of(&self, ty: KeyType) -> &[String] {
        match ty {
            KeyType::Channel => &self.channels,
            KeyType::Device => &self.devices,
            KeyType::DmaRegion => &self.dma,
            KeyType::SharedRegion => &self.shared,
            KeyType::Notification => &self.notifications,
            _ => &[],
        }
    }
}

/// One table being checked.
struct Table<'a> {
    program: &'a str,
    /// The partition references are resolved against (a channel's: its server).
    partition: &'a str,
    /// The channel, for a channel's table.
    channel: Option<&'a str>,
    /// Where missing settings and bad defaults are reported: the table, or the name of the
    /// partition or channel that has none.
    anchor: Span,
}

pub(crate) fn check(
    ctx: &mut Ctx,
    raw: &RawSystem,
    programs: &Programs,
    partitions: &mut [Partition],
    channels: &mut [Channel],
    resolved: &Resolved<'_>,
) {
    let refs: Vec<Refs> = (0..partitions.len())
        .map(|i| refs(i, raw, partitions, resolved))
        .collect();
    for (i, (name, p)) in raw.partitions.iter().enumerate() {
        let program = partitions[i].program.clone();
        let Some(schema) = programs.schema(&program) else {
            continue;
        };
        let table = Table {
            program: &program,
            partition: name.get_ref(),
            channel: None,
            anchor: p
                .get_ref()
                .config
                .as_ref()
                .map_or(name.span(), |c| c.span()),
        };
        partitions[i].config = check_table(
            ctx,
            &table,
            &schema.config,
            p.get_ref().config.as_ref(),
            &refs[i],
        );
    }
    let mut unique: HashMap<(usize, &str, String), Span> = HashMap::new();
    for (name, c) in &raw.channels {
        let Some(channel) = channels.iter_mut().find(|c| c.name == *name.get_ref()) else {
            continue;
        };
        let server = &partitions[channel.server.0];
        let Some(schema) = programs.schema(&server.program) else {
            continue;
        };
        let raw_config = c.get_ref().config.as_ref();
        let table = Table {
            program: &server.program,
            partition: &server.name,
            channel: Some(name.get_ref()),
            anchor: raw_config.map_or(name.span(), |c| c.span()),
        };
        channel.config = check_table(
            ctx,
            &table,
            &schema.channel,
            raw_config,
            &refs[channel.server.0],
        );
        for (key, value) in raw_config.map(|c| c.get_ref().iter()).into_iter().flatten() {
            let Some(k) = schema.channel.get(key.get_ref()).filter(|k| k.unique) else {
                continue;
            };
            let Some(v) = channel.config.get(key.get_ref()) else {
                continue;
            };
            let normal = match (k.ty, v) {
                (KeyType::Mac, toml::Value::String(m)) => m.to_ascii_lowercase(),
                (_, v) => v.to_string(),
            };
            let id = (channel.server.0, key.get_ref().as_str(), normal);
            if let Some(first) = unique.get(&id) {
                let message = match (k.ty, value.get_ref()) {
                    (KeyType::Mac, toml::Value::String(m)) => {
                        format!("MAC address \"{m}\" is given to two clients")
                    }
                    (_, v) => format!(
                        "setting \"{}\" = {v} is given to two channels of partition \"{}\"",
                        key.get_ref(),
                        server.name
                    ),
                };
                ctx.push(
                    Pending::error(value.span(), message).note(first.clone(), "first given here"),
                );
            } else {
                unique.insert(id, value.span());
            }
        }
    }
}

fn refs(i: usize, raw: &RawSystem, partitions: &[Partition], resolved: &Resolved<'_>) -> Refs {
    let p = &partitions[i];
    Refs {
        channels: raw
            .channels
            .iter()
            .filter(|(_, c)| {
                *c.get_ref().client.get_ref() == p.name || *c.get_ref().server.get_ref() == p.name
            })
            .map(|(n, _)| n.get_ref().clone())
            .collect(),
        devices: p
            .devices
            .iter()
            .map(|d| resolved.devices[d.0].name.clone())
            .collect(),
        dma: p.dma.iter().map(|d| d.name.clone()).collect(),
        shared: resolved
            .shared
            .iter()
            .filter(|s| s.mappings.iter().any(|m| m.partition.0 == i))
            .map(|s| s.name.clone())
            .collect(),
        notifications: resolved
            .notifications
            .iter()
            .filter(|n| n.receiver.0 == i || n.senders.iter().any(|s| s.0 == i))
            .map(|n| n.name.clone())
            .collect(),
    }
}

/// Checks one table; returns its settings in schema order with defaults filled in.
fn check_table(
    ctx: &mut Ctx,
    t: &Table<'_>,
    keys: &IndexMap<String, KeySchema>,
    raw: Option<&Spanned<Config>>,
    refs: &Refs,
) -> toml::Table {
    let which = if t.channel.is_some() {
        "channel setting"
    } else {
        "setting"
    };
    let mut given: HashMap<&str, &Spanned<toml::Value>> = HashMap::new();
    for (key, value) in raw.map(|c| c.get_ref().iter()).into_iter().flatten() {
        let Some(k) = keys.get(key.get_ref()) else {
            let hint = match suggest(key.get_ref(), keys.keys().map(String::as_str)) {
                Some(s) => format!(" (did you mean \"{s}\"?)"),
                None if keys.is_empty() => format!(": it takes no {which}s"),
                None => {
                    let names: Vec<&str> = keys.keys().map(String::as_str).collect();
                    format!(" (expected {})", list(&names))
                }
            };
            ctx.error(
                key.span(),
                format!(
                    "unknown {which} \"{}\" of program \"{}\"{hint}",
                    key.get_ref(),
                    t.program
                ),
            );
            continue;
        };
        if let Err(e) = check_value(k, value.get_ref()) {
            ctx.error(value.span(), format!("{which} \"{}\": {e}", key.get_ref()));
            continue;
        }
        if let Some(s) = value.get_ref().as_str()
            && let Some(reason) = bad_reference(t, k.ty, s, refs)
        {
            ctx.error(
                value.span(),
                format!("{which} \"{}\": \"{s}\" is {reason}", key.get_ref()),
            );
            continue;
        }
        given.insert(key.get_ref(), value);
    }

    // In schema order: given values, plain defaults, then `{KEY}` defaults expanded.
    let mut values: Vec<(&str, Option<toml::Value>)> = Vec::new();
    let mut templates = Vec::new();
    for (key, k) in keys {
        let value = match (given.get(key.as_str()), &k.default) {
            (Some(v), _) => Some(v.get_ref().clone()),
            (None, Some(toml::Value::String(s))) if s.contains('{') => {
                templates.push(values.len());
                None
            }
            (None, Some(d)) => Some(d.clone()),
            (None, None) => {
                if k.required && raw.is_none_or(|r| !r.get_ref().keys().any(|n| n.get_ref() == key))
                {
                    let owner = match t.channel {
                        Some(c) => format!("channel \"{c}\""),
                        None => format!("partition \"{}\"", t.partition),
                    };
                    ctx.error(
                        t.anchor.clone(),
                        format!(
                            "{owner} lacks {which} \"{key}\", which program \"{}\" requires",
                            t.program
                        ),
                    );
                }
                None
            }
        };
        values.push((key.as_str(), value));
    }
    for at in templates {
        let key = values[at].0;
        let Some(toml::Value::String(template)) = &keys[key].default else {
            continue;
        };
        let lookup = |name: &str| match (name, t.channel) {
            ("channel", Some(c)) => Some(c.to_owned()),
            _ => values
                .iter()
                .find(|(k, _)| *k == name)
                .and_then(|(_, v)| v.as_ref()?.as_str().map(str::to_owned)),
        };
        // A placeholder without a value was missing or wrong, which is reported already.
        if placeholders(template).iter().all(|p| lookup(p).is_some()) {
            values[at].1 = Some(toml::Value::String(expand(template, lookup)));
        }
    }
    // Defaults are checked like given values: a reference must name something that exists.
    for (key, value) in &values {
        let k = &keys[*key];
        if given.contains_key(key) {
            continue;
        }
        if let Some(toml::Value::String(s)) = value
            && let Some(reason) = bad_reference(t, k.ty, s, refs)
        {
            ctx.error(
                t.anchor.clone(),
                format!("{which} \"{key}\" defaults to \"{s}\", which is {reason}; set \"{key}\""),
            );
        }
    }
    values
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_owned(), v?)))
        .collect()
}

/// Why `name` is not what a reference of type `ty` may name (`not a device granted to …`),
/// or `None` if it is.
fn bad_reference(t: &Table<'_>, ty: KeyType, name: &str, refs: &Refs) -> Option<String> {
    let what = ty.reference_description()?;
    let candidates = refs.of(ty);
    if candidates.iter().any(|c| c == name) {
        return None;
    }
    let hint = match suggest(name, candidates.iter().map(String::as_str)) {
        Some(s) => format!(" (did you mean \"{s}\"?)"),
        None => String::new(),
    };
    Some(format!("not {what} partition \"{}\"{hint}", t.partition))
}
