//! The description as written: serde structures that keep the span of every value.
//!
//! Only the TOML shape is checked here (unknown keys, wrong value types, missing keys); units,
//! references and every other rule are checked in `validate`, which can report many errors.

use indexmap::IndexMap;
use serde::Deserialize;
use toml::Spanned;

pub type Name = Spanned<String>;
/// A size or duration: a string with a unit or an integer, parsed during validation.
pub type Quantity = Spanned<toml::Value>;
pub type Table<T> = IndexMap<Name, Spanned<T>>;
/// A `config` table; keys and values keep their spans for checking against the program's
/// schema.
pub type Config = IndexMap<Name, Spanned<toml::Value>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawSystem {
    pub system: Option<Spanned<RawSystemTable>>,
    #[serde(default)]
    pub memory: Table<RawMemory>,
    pub schedule: Option<Spanned<RawSchedule>>,
    #[serde(default)]
    pub partitions: Table<RawPartition>,
    #[serde(default)]
    pub devices: Table<RawDevice>,
    #[serde(default)]
    pub channels: Table<RawChannel>,
    #[serde(default)]
    pub notifications: Table<RawNotification>,
    #[serde(default)]
    pub shared: Table<RawShared>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawSystemTable {
    pub name: Name,
    pub arch: Spanned<Vec<Name>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawMemory {
    pub ram: Vec<Spanned<RawRange>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawRange {
    pub base: Spanned<i64>,
    pub size: Quantity,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawSchedule {
    pub major_frame: Quantity,
    #[serde(default)]
    pub windows: Vec<Spanned<RawWindow>>,
    #[serde(default)]
    pub background: Vec<Name>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawWindow {
    pub partition: Name,
    pub offset: Option<Quantity>,
    pub length: Quantity,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawPartition {
    pub program: Option<Name>,
    pub memory: Quantity,
    #[serde(default)]
    pub threads: Vec<Spanned<RawThread>>,
    pub health: Option<Spanned<RawHealth>>,
    #[serde(default)]
    pub devices: Vec<Name>,
    #[serde(default)]
    pub dma: Vec<Spanned<RawDma>>,
    pub config: Option<Spanned<Config>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawThread {
    pub name: Name,
    pub priority: Spanned<i64>,
    pub stack: Option<Quantity>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawHealth {
    pub action: Name,
    pub max_restarts: Option<Spanned<i64>>,
    pub period: Option<Quantity>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawDma {
    pub name: Name,
    pub size: Quantity,
    pub cache: Option<Name>,
}

/// Resources that may be given for every architecture or in a per-architecture sub-table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawResources {
    pub pci: Option<Spanned<RawPci>>,
    #[serde(default)]
    pub mmio: Vec<Spanned<RawMmio>>,
    #[serde(default)]
    pub io_ports: Vec<Spanned<RawPorts>>,
    #[serde(default)]
    pub irqs: Vec<Spanned<i64>>,
    pub msi: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawDevice {
    pub kind: Option<Name>,
    pub arch: Option<Spanned<Vec<Name>>>,
    pub pci: Option<Spanned<RawPci>>,
    #[serde(default)]
    pub mmio: Vec<Spanned<RawMmio>>,
    #[serde(default)]
    pub io_ports: Vec<Spanned<RawPorts>>,
    #[serde(default)]
    pub irqs: Vec<Spanned<i64>>,
    pub msi: Option<Spanned<i64>>,
    #[serde(rename = "x86_64")]
    pub x86_64: Option<Spanned<RawResources>>,
    pub aarch64: Option<Spanned<RawResources>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawPci {
    pub address: Option<Name>,
    pub id: Option<Name>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawMmio {
    pub base: Spanned<i64>,
    pub size: Quantity,
    pub cache: Option<Name>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawPorts {
    pub base: Spanned<i64>,
    pub count: Spanned<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawChannel {
    pub client: Name,
    pub server: Name,
    pub message_size: Quantity,
    pub config: Option<Spanned<Config>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawNotification {
    pub senders: Spanned<Vec<Name>>,
    pub receiver: Name,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawShared {
    pub size: Quantity,
    pub cache: Option<Name>,
    pub dma_owner: Option<Name>,
    pub map: Spanned<Vec<Spanned<RawMapping>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawMapping {
    pub partition: Name,
    pub access: Name,
}
