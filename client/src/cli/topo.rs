//! `metactl` topology/location commands: `site`, `silo`, `instance`, `tombstone`, `locate`,
//! `record-write`. Grammar, execution and output views (JSON shape + table) in one place.

use std::collections::BTreeMap;

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

use super::commands::Output;
use super::output::View;
use super::table;
use crate::pb;
use crate::topology::{InstanceSpec, SiloSpec, SiloUpdate};
use crate::{Client, ClientError, ErrorCode, ReadOptions};

#[derive(Debug, Clone, Subcommand)]
pub enum TopoCmd {
    /// Register and list sites (data centres, cloud regions).
    #[command(subcommand)]
    Site(SiteCmd),
    /// Register, list, change and remove silos (storage systems at a site).
    #[command(subcommand)]
    Silo(SiloCmd),
    /// Record and list the copies (instances) of files on silos.
    #[command(subcommand)]
    Instance(InstanceCmd),
    /// Instances of deleted files that a silo's agent still has to reclaim.
    #[command(subcommand)]
    Tombstone(TombstoneCmd),
    /// Where to read a file: its readable copies, nearest first.
    #[command(long_about = "\
Show the readable copies of a file (valid at its current content generation, on a silo that is
not offline), nearest first: silos at --site first, then faster tier (hot, warm, cold,
archive), then lower cost.

Example:
    metactl locate /ml/imagenet/train-0001.tar --site gpu-east
    metactl locate /ml/imagenet/train-0001.tar -o json")]
    Locate(LocateArgs),
    /// Record that a file's bytes were rewritten at a silo (other copies become stale).
    #[command(long_about = "\
Record that the file's bytes were rewritten at SILO: its content generation is bumped, the copy
on SILO becomes the valid one (created if needed) and every other copy becomes stale.

Example:
    metactl record-write /ml/data.bin --silo nas1 --size 1.5GiB --checksum sha256:9f2c...")]
    RecordWrite(RecordWriteArgs),
}

#[derive(Debug, Clone, Subcommand)]
pub enum SiteCmd {
    /// Register a site.
    #[command(long_about = "\
Register a site. Names are 1-64 characters of [A-Za-z0-9._-].

Example:
    metactl site add dc-paris --region eu-west --label owner=infra
    metactl site add gpu-east --description \"rented GPU cluster\"")]
    Add {
        name: String,
        /// Free text (at most 1024 bytes).
        #[arg(long, default_value = "")]
        description: String,
        /// Region or location, e.g. eu-west (at most 1024 bytes).
        #[arg(long, default_value = "")]
        region: String,
        /// A label KEY=VALUE (repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// List sites.
    #[command(long_about = "List every site.\n\nExample:\n    metactl site ls -o json")]
    Ls,
}

#[derive(Debug, Clone, Subcommand)]
pub enum SiloCmd {
    /// Register a silo at a site.
    #[command(long_about = "\
Register a silo (one storage system) at an existing site. It starts online.
Sizes accept units: 500MB, 10GiB, 1.5TiB (B, KB/MB/GB/TB/PB = powers of 1000,
KiB/MiB/GiB/TiB/PiB = powers of 1024).

Example:
    metactl silo add nas1 --site dc-paris --kind nfs --tier warm --capacity 500TiB \\
        --cost 0.012 --root /mnt/nas1 --label rack=r12
    metactl silo add s3-cold --site aws-eu --kind s3 --tier cold --capacity 10PB \\
        --cost 0.004 --root s3://bucket/prefix")]
    Add(SiloAddArgs),
    /// List silos.
    #[command(long_about = "\
List silos (all, or only those at --site).

Example:
    metactl silo ls
    metactl silo ls --site dc-paris -o json")]
    Ls {
        #[arg(long)]
        site: Option<String>,
    },
    /// Change a silo's state, usage, capacity or labels.
    #[command(long_about = "\
Change a silo. `draining` keeps it readable while data moves off; `offline` makes its copies
unreadable and refuses new ones.

Example:
    metactl silo set nas1 --state draining
    metactl silo set nas1 --used 120TiB --label rack=r13 --remove-label old")]
    Set(SiloSetArgs),
    /// Remove a silo (refused while it holds a file's only valid copy).
    #[command(long_about = "\
Remove a silo and forget its copies. Refused (FAILED_PRECONDITION, naming a file) while the
silo holds the only valid copy of any file.

Example:
    metactl silo rm nas-old")]
    Rm { name: String },
}

#[derive(Debug, Clone, Args)]
pub struct SiloAddArgs {
    pub name: String,
    #[arg(long)]
    pub site: String,
    #[arg(long, value_enum)]
    pub kind: KindArg,
    #[arg(long, value_enum)]
    pub tier: TierArg,
    /// Capacity, e.g. 500TiB.
    #[arg(long, value_parser = parse_size, value_name = "BYTES")]
    pub capacity: u64,
    /// Cost per GiB-month (e.g. 0.023).
    #[arg(long, value_name = "PER_GIB_MONTH")]
    pub cost: f64,
    /// Directory (posix, nfs, nvme) or URL (s3://bucket/prefix) where agents find the data.
    #[arg(long, value_name = "DIR_OR_URL")]
    pub root: String,
    /// A label KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
}

#[derive(Debug, Clone, Args)]
pub struct SiloSetArgs {
    pub name: String,
    #[arg(long, value_enum)]
    pub state: Option<StateArg>,
    /// Bytes in use, e.g. 120TiB.
    #[arg(long, value_parser = parse_size, value_name = "BYTES")]
    pub used: Option<u64>,
    #[arg(long, value_parser = parse_size, value_name = "BYTES")]
    pub capacity: Option<u64>,
    /// Set a label KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Remove a label (repeatable).
    #[arg(long = "remove-label", value_name = "KEY")]
    pub remove_labels: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    Posix,
    Nfs,
    S3,
    Nvme,
    Archive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TierArg {
    Hot,
    Warm,
    Cold,
    Archive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    Online,
    Draining,
    Offline,
}

#[derive(Debug, Clone, Subcommand)]
pub enum InstanceCmd {
    /// Record that a silo holds a copy of a file.
    #[command(long_about = "\
Record that SILO holds a copy of the file at PATH, at the file's current content generation
(valid) unless --gen names an older one (stale). --bytes defaults to the file's size.

Example:
    metactl instance add /ml/data.bin --silo nas1 --checksum sha256:9f2c...
    metactl instance add /ml/data.bin --silo s3-cold --bytes 1.5GiB")]
    Add {
        path: String,
        #[arg(long)]
        silo: String,
        #[arg(long, value_parser = parse_size, value_name = "BYTES")]
        bytes: Option<u64>,
        #[arg(long, default_value = "")]
        checksum: String,
        /// Content generation the copy holds (default: the file's current).
        #[arg(long = "gen", value_name = "GEN")]
        content_gen: Option<u64>,
    },
    /// List the copies on a silo.
    #[command(long_about = "\
List the copies held by a silo, in inode order. Prints one page (--limit, at most 10000) and
the cursor of the next; --all follows the cursors to the end.

Example:
    metactl instance ls --silo nas1
    metactl instance ls --silo nas1 --all -o json")]
    Ls(PageArgs),
}

#[derive(Debug, Clone, Subcommand)]
pub enum TombstoneCmd {
    /// List the tombstones of a silo.
    #[command(
        long_about = "List deleted files' copies a silo must reclaim.\n\nExample:\n    metactl tombstone ls --silo nas1"
    )]
    Ls(PageArgs),
    /// Confirm a tombstone's bytes were deleted.
    #[command(
        long_about = "Confirm that SILO deleted the bytes of inode INO.\n\nExample:\n    metactl tombstone confirm --silo nas1 --ino 1234"
    )]
    Confirm {
        #[arg(long)]
        silo: String,
        #[arg(long)]
        ino: u64,
    },
}

#[derive(Debug, Clone, Args)]
pub struct PageArgs {
    #[arg(long)]
    pub silo: String,
    /// Start after this cursor (from a previous page).
    #[arg(long, default_value = "")]
    pub cursor: String,
    /// Page size (default 1000, at most 10000).
    #[arg(long, default_value_t = 0)]
    pub limit: u32,
    /// Follow cursors until the end.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Clone, Args)]
pub struct LocateArgs {
    pub path: String,
    /// The reader's site: its silos come first.
    #[arg(long, default_value = "")]
    pub site: String,
}

#[derive(Debug, Clone, Args)]
pub struct RecordWriteArgs {
    pub path: String,
    #[arg(long)]
    pub silo: String,
    /// New size of the file, e.g. 1.5GiB.
    #[arg(long, value_parser = parse_size, value_name = "BYTES")]
    pub size: u64,
    #[arg(long, default_value = "")]
    pub checksum: String,
    /// Modification time in ms since the epoch (default: now, by the leader's clock).
    #[arg(long)]
    pub mtime_ms: Option<u64>,
}

/// Parses a size: a number with an optional unit. B; KB, MB, GB, TB, PB (powers of 1000);
/// KiB, MiB, GiB, TiB, PiB (powers of 1024); units are case-insensitive, fractions allowed
/// (1.5TiB), and the result must be a whole number of bytes within u64.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num = num.replace('_', "");
    if num.is_empty() {
        return Err(format!("bad size {s:?} (try 500MB, 10GiB, 1.5TiB)"));
    }
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "m" | "mb" => 1000u64.pow(2),
        "g" | "gb" => 1000u64.pow(3),
        "t" | "tb" => 1000u64.pow(4),
        "p" | "pb" => 1000u64.pow(5),
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        "ti" | "tib" => 1 << 40,
        "pi" | "pib" => 1 << 50,
        u => {
            return Err(format!(
                "bad size unit {u:?} in {s:?} (use B, KB..PB or KiB..PiB)"
            ))
        }
    };
    let out_of_range = || format!("size {s:?} does not fit in 64 bits");
    match num.split_once('.') {
        None => {
            let n: u64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
            n.checked_mul(mult).ok_or_else(out_of_range)
        }
        Some((int, frac)) => {
            if frac.contains('.') || (int.is_empty() && frac.is_empty()) {
                return Err(format!("bad size {s:?}"));
            }
            // Exact decimal arithmetic: int*mult + frac*mult/10^len, which must be whole.
            let int: u128 = if int.is_empty() {
                0
            } else {
                int.parse().map_err(|_| format!("bad size {s:?}"))?
            };
            let frac_digits = frac.len() as u32;
            if frac_digits > 18 {
                return Err(format!("bad size {s:?}: too many decimals"));
            }
            let frac_n: u128 = if frac.is_empty() {
                0
            } else {
                frac.parse().map_err(|_| format!("bad size {s:?}"))?
            };
            let scale = 10u128.pow(frac_digits);
            let m = mult as u128;
            let frac_bytes = frac_n * m;
            if !frac_bytes.is_multiple_of(scale) {
                return Err(format!("size {s:?} is not a whole number of bytes"));
            }
            let total = int
                .checked_mul(m)
                .and_then(|v| v.checked_add(frac_bytes / scale))
                .ok_or_else(out_of_range)?;
            u64::try_from(total).map_err(|_| out_of_range())
        }
    }
}

/// Parses `KEY=VALUE`.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("bad label {s:?}: expected KEY=VALUE")),
    }
}

/// Renders a byte count with a binary unit (e.g. "1.5 TiB").
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

fn kind_pb(k: KindArg) -> pb::SiloKind {
    match k {
        KindArg::Posix => pb::SiloKind::Posix,
        KindArg::Nfs => pb::SiloKind::Nfs,
        KindArg::S3 => pb::SiloKind::S3,
        KindArg::Nvme => pb::SiloKind::Nvme,
        KindArg::Archive => pb::SiloKind::Archive,
    }
}

fn tier_pb(t: TierArg) -> pb::SiloTier {
    match t {
        TierArg::Hot => pb::SiloTier::Hot,
        TierArg::Warm => pb::SiloTier::Warm,
        TierArg::Cold => pb::SiloTier::Cold,
        TierArg::Archive => pb::SiloTier::Archive,
    }
}

fn state_pb(s: StateArg) -> pb::SiloState {
    match s {
        StateArg::Online => pb::SiloState::Online,
        StateArg::Draining => pb::SiloState::Draining,
        StateArg::Offline => pb::SiloState::Offline,
    }
}

fn kind_name(k: i32) -> String {
    pb::SiloKind::try_from(k)
        .map(|k| {
            k.as_str_name()
                .trim_start_matches("SILO_KIND_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| k.to_string())
}

fn tier_name(t: i32) -> String {
    pb::SiloTier::try_from(t)
        .map(|t| {
            t.as_str_name()
                .trim_start_matches("SILO_TIER_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| t.to_string())
}

fn silo_state_name(s: i32) -> String {
    pb::SiloState::try_from(s)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("SILO_STATE_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| s.to_string())
}

fn instance_state_name(s: i32) -> String {
    pb::InstanceState::try_from(s)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("INSTANCE_STATE_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| s.to_string())
}

fn labels_cell(l: &BTreeMap<String, String>) -> String {
    if l.is_empty() {
        return "-".into();
    }
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

// ---------- views ----------

#[derive(Debug, Serialize)]
pub struct SiteView {
    pub name: String,
    pub description: String,
    pub region: String,
    pub labels: BTreeMap<String, String>,
    pub create_revision: u64,
    pub mod_revision: u64,
}

impl From<pb::Site> for SiteView {
    fn from(s: pb::Site) -> Self {
        SiteView {
            name: s.name,
            description: s.description,
            region: s.region,
            labels: s.labels,
            create_revision: s.create_revision,
            mod_revision: s.mod_revision,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct SitesView {
    pub revision: u64,
    pub sites: Vec<SiteView>,
}

impl View for SitesView {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .sites
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    if s.region.is_empty() {
                        "-".into()
                    } else {
                        s.region.clone()
                    },
                    labels_cell(&s.labels),
                    s.description.clone(),
                ]
            })
            .collect();
        table::render(&["NAME", "REGION", "LABELS", "DESCRIPTION"], &rows)
    }
}

#[derive(Debug, Serialize)]
pub struct SiloView {
    pub name: String,
    pub site: String,
    pub kind: String,
    pub tier: String,
    pub state: String,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub cost_per_gib_month: f64,
    pub root: String,
    pub labels: BTreeMap<String, String>,
    pub create_revision: u64,
    pub mod_revision: u64,
}

impl From<pb::Silo> for SiloView {
    fn from(s: pb::Silo) -> Self {
        SiloView {
            kind: kind_name(s.kind),
            tier: tier_name(s.tier),
            state: silo_state_name(s.state),
            name: s.name,
            site: s.site,
            capacity_bytes: s.capacity_bytes,
            used_bytes: s.used_bytes,
            cost_per_gib_month: s.cost_per_gib_month,
            root: s.root,
            labels: s.labels,
            create_revision: s.create_revision,
            mod_revision: s.mod_revision,
        }
    }
}

fn silo_rows(silos: &[SiloView]) -> String {
    let rows: Vec<Vec<String>> = silos
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.site.clone(),
                s.kind.clone(),
                s.tier.clone(),
                s.state.clone(),
                human_bytes(s.used_bytes),
                human_bytes(s.capacity_bytes),
                format!("{}", s.cost_per_gib_month),
                s.root.clone(),
                labels_cell(&s.labels),
            ]
        })
        .collect();
    table::render(
        &[
            "NAME",
            "SITE",
            "KIND",
            "TIER",
            "STATE",
            "USED",
            "CAPACITY",
            "COST/GiB-MO",
            "ROOT",
            "LABELS",
        ],
        &rows,
    )
}

#[derive(Debug, Serialize)]
pub struct SilosView {
    pub revision: u64,
    pub silos: Vec<SiloView>,
}

impl View for SilosView {
    fn table(&self) -> String {
        silo_rows(&self.silos)
    }
}

/// The answer to a write: what was done, the revision, and the object after it.
#[derive(Debug, Serialize)]
pub struct ChangeView<T: Serialize> {
    pub action: String,
    pub revision: u64,
    #[serde(flatten)]
    pub object: T,
}

impl<T: Serialize> View for ChangeView<T> {
    fn table(&self) -> String {
        format!("{} (revision {})\n", self.action, self.revision)
    }
}

#[derive(Debug, Serialize)]
pub struct InstanceView {
    pub path: String,
    pub ino: u64,
    pub silo: String,
    pub state: String,
    pub content_gen: u64,
    pub bytes: u64,
    pub checksum: String,
    pub create_revision: u64,
    pub mod_revision: u64,
}

impl From<pb::Instance> for InstanceView {
    fn from(i: pb::Instance) -> Self {
        InstanceView {
            state: instance_state_name(i.state),
            path: i.path,
            ino: i.ino,
            silo: i.silo,
            content_gen: i.content_gen,
            bytes: i.bytes,
            checksum: i.checksum,
            create_revision: i.create_revision,
            mod_revision: i.mod_revision,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct InstancesView {
    pub revision: u64,
    pub instances: Vec<InstanceView>,
    /// Pass to `--cursor` for the next page; empty when there is none.
    pub next_cursor: String,
}

impl View for InstancesView {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .instances
            .iter()
            .map(|i| {
                vec![
                    i.path.clone(),
                    i.ino.to_string(),
                    i.state.clone(),
                    i.content_gen.to_string(),
                    human_bytes(i.bytes),
                    if i.checksum.is_empty() {
                        "-".into()
                    } else {
                        i.checksum.clone()
                    },
                ]
            })
            .collect();
        let mut out = table::render(&["PATH", "INO", "STATE", "GEN", "BYTES", "CHECKSUM"], &rows);
        if !self.next_cursor.is_empty() {
            out.push_str(&format!("more: --cursor {}\n", self.next_cursor));
        }
        out
    }
}

#[derive(Debug, Serialize)]
pub struct TombstoneView {
    pub path: String,
    pub ino: u64,
    pub silo: String,
    pub bytes: u64,
    pub checksum: String,
    pub content_gen: u64,
    pub state: String,
    pub deleted_revision: u64,
}

impl From<pb::Tombstone> for TombstoneView {
    fn from(t: pb::Tombstone) -> Self {
        TombstoneView {
            state: instance_state_name(t.state),
            path: t.path,
            ino: t.ino,
            silo: t.silo,
            bytes: t.bytes,
            checksum: t.checksum,
            content_gen: t.content_gen,
            deleted_revision: t.deleted_revision,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TombstonesView {
    pub revision: u64,
    pub tombstones: Vec<TombstoneView>,
    pub next_cursor: String,
}

impl View for TombstonesView {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .tombstones
            .iter()
            .map(|t| {
                vec![
                    t.path.clone(),
                    t.ino.to_string(),
                    human_bytes(t.bytes),
                    t.deleted_revision.to_string(),
                ]
            })
            .collect();
        let mut out = table::render(&["PATH", "INO", "BYTES", "DELETED_AT_REV"], &rows);
        if !self.next_cursor.is_empty() {
            out.push_str(&format!("more: --cursor {}\n", self.next_cursor));
        }
        out
    }
}

#[derive(Debug, Serialize)]
pub struct LocatedView {
    pub silo: String,
    pub site: String,
    pub same_site: bool,
    pub kind: String,
    pub tier: String,
    pub cost_per_gib_month: f64,
    pub root: String,
    pub content_gen: u64,
    pub bytes: u64,
    pub checksum: String,
}

#[derive(Debug, Serialize)]
pub struct LocateView {
    pub path: String,
    pub ino: u64,
    pub content_gen: u64,
    pub size: u64,
    pub revision: u64,
    pub instances: Vec<LocatedView>,
    pub moves: Vec<String>,
}

impl LocateView {
    fn new(path: String, r: pb::LocateResponse) -> Self {
        LocateView {
            path,
            ino: r.ino,
            content_gen: r.content_gen,
            size: r.size,
            revision: r.header.map(|h| h.revision).unwrap_or(0),
            instances: r
                .instances
                .into_iter()
                .map(|l| {
                    let i = l.instance.unwrap_or_default();
                    let s = l.silo.unwrap_or_default();
                    LocatedView {
                        silo: i.silo,
                        site: s.site,
                        same_site: l.same_site,
                        kind: kind_name(s.kind),
                        tier: tier_name(s.tier),
                        cost_per_gib_month: s.cost_per_gib_month,
                        root: s.root,
                        content_gen: i.content_gen,
                        bytes: i.bytes,
                        checksum: i.checksum,
                    }
                })
                .collect(),
            moves: r
                .moves
                .into_iter()
                .map(|m| format!("{} -> {} ({})", m.source_silo, m.target_silo, m.state))
                .collect(),
        }
    }
}

impl View for LocateView {
    fn table(&self) -> String {
        let mut out = format!(
            "{} (ino {}, generation {}, {})\n",
            self.path,
            self.ino,
            self.content_gen,
            human_bytes(self.size)
        );
        if self.instances.is_empty() {
            out.push_str("no readable copy\n");
            return out;
        }
        let rows: Vec<Vec<String>> = self
            .instances
            .iter()
            .map(|l| {
                vec![
                    l.silo.clone(),
                    if l.same_site {
                        format!("{}*", l.site)
                    } else {
                        l.site.clone()
                    },
                    l.kind.clone(),
                    l.tier.clone(),
                    format!("{}", l.cost_per_gib_month),
                    l.root.clone(),
                ]
            })
            .collect();
        out.push_str(&table::render(
            &["SILO", "SITE", "KIND", "TIER", "COST/GiB-MO", "ROOT"],
            &rows,
        ));
        out
    }
}

// ---------- execution ----------

fn labels(v: &[(String, String)]) -> BTreeMap<String, String> {
    v.iter().cloned().collect()
}

fn rev(h: Option<pb::ResponseHeader>) -> u64 {
    h.map(|h| h.revision).unwrap_or(0)
}

fn missing(what: &str) -> ClientError {
    ClientError::rpc(ErrorCode::Internal, format!("answer without {what}"))
}

pub async fn execute(client: &Client, cmd: &TopoCmd) -> Result<Output, ClientError> {
    let read = ReadOptions::default;
    match cmd {
        TopoCmd::Site(SiteCmd::Add {
            name,
            description,
            region,
            labels: l,
        }) => {
            let r = client
                .register_site(name, description, region, labels(l))
                .await?;
            let site = r.site.ok_or_else(|| missing("site"))?;
            Output::of(&ChangeView {
                action: format!("registered site {name}"),
                revision: rev(r.header),
                object: SiteView::from(site),
            })
        }
        TopoCmd::Site(SiteCmd::Ls) => {
            let r = client.list_sites(read()).await?;
            Output::of(&SitesView {
                revision: rev(r.header),
                sites: r.sites.into_iter().map(SiteView::from).collect(),
            })
        }
        TopoCmd::Silo(SiloCmd::Add(a)) => {
            let r = client
                .register_silo(SiloSpec {
                    name: a.name.clone(),
                    site: a.site.clone(),
                    kind: kind_pb(a.kind),
                    tier: tier_pb(a.tier),
                    capacity_bytes: a.capacity,
                    cost_per_gib_month: a.cost,
                    root: a.root.clone(),
                    labels: labels(&a.labels),
                })
                .await?;
            let silo = r.silo.ok_or_else(|| missing("silo"))?;
            Output::of(&ChangeView {
                action: format!("registered silo {} at site {}", a.name, a.site),
                revision: rev(r.header),
                object: SiloView::from(silo),
            })
        }
        TopoCmd::Silo(SiloCmd::Ls { site }) => {
            let r = client
                .list_silos(site.as_deref().unwrap_or(""), read())
                .await?;
            Output::of(&SilosView {
                revision: rev(r.header),
                silos: r.silos.into_iter().map(SiloView::from).collect(),
            })
        }
        TopoCmd::Silo(SiloCmd::Set(a)) => {
            let r = client
                .update_silo(
                    &a.name,
                    SiloUpdate {
                        state: a.state.map(state_pb),
                        used_bytes: a.used,
                        capacity_bytes: a.capacity,
                        set_labels: labels(&a.labels),
                        remove_labels: a.remove_labels.clone(),
                    },
                )
                .await?;
            let silo = r.silo.ok_or_else(|| missing("silo"))?;
            Output::of(&ChangeView {
                action: format!("updated silo {}", a.name),
                revision: rev(r.header),
                object: SiloView::from(silo),
            })
        }
        TopoCmd::Silo(SiloCmd::Rm { name }) => {
            let r = client.remove_silo(name).await?;
            #[derive(Serialize)]
            struct Removed {
                name: String,
                instances_removed: u64,
                tombstones_removed: u64,
            }
            Output::of(&ChangeView {
                action: format!(
                    "removed silo {name} ({} copies, {} tombstones forgotten)",
                    r.instances_removed, r.tombstones_removed
                ),
                revision: rev(r.header),
                object: Removed {
                    name: name.clone(),
                    instances_removed: r.instances_removed,
                    tombstones_removed: r.tombstones_removed,
                },
            })
        }
        TopoCmd::Instance(InstanceCmd::Add {
            path,
            silo,
            bytes,
            checksum,
            content_gen,
        }) => {
            let r = client
                .add_instance(
                    path,
                    silo,
                    InstanceSpec {
                        bytes: *bytes,
                        checksum: checksum.clone(),
                        content_gen: *content_gen,
                        location: String::new(),
                    },
                )
                .await?;
            let inst = InstanceView::from(r.instance.ok_or_else(|| missing("instance"))?);
            Output::of(&ChangeView {
                action: format!(
                    "added {} instance of {path} on {silo} (generation {})",
                    inst.state, inst.content_gen
                ),
                revision: rev(r.header),
                object: inst,
            })
        }
        TopoCmd::Instance(InstanceCmd::Ls(p)) => {
            let mut cursor = p.cursor.clone();
            let mut all = Vec::new();
            let mut revision;
            loop {
                let r = client
                    .list_instances(&p.silo, &cursor, p.limit, read())
                    .await?;
                revision = rev(r.header);
                all.extend(r.instances.into_iter().map(InstanceView::from));
                cursor = r.next_cursor;
                if !p.all || cursor.is_empty() {
                    break;
                }
            }
            Output::of(&InstancesView {
                revision,
                instances: all,
                next_cursor: cursor,
            })
        }
        TopoCmd::Tombstone(TombstoneCmd::Ls(p)) => {
            let mut cursor = p.cursor.clone();
            let mut all = Vec::new();
            let mut revision;
            loop {
                let r = client
                    .list_tombstones(&p.silo, &cursor, p.limit, read())
                    .await?;
                revision = rev(r.header);
                all.extend(r.tombstones.into_iter().map(TombstoneView::from));
                cursor = r.next_cursor;
                if !p.all || cursor.is_empty() {
                    break;
                }
            }
            Output::of(&TombstonesView {
                revision,
                tombstones: all,
                next_cursor: cursor,
            })
        }
        TopoCmd::Tombstone(TombstoneCmd::Confirm { silo, ino }) => {
            let r = client.confirm_reclaimed(silo, *ino).await?;
            let t = TombstoneView::from(r.tombstone.ok_or_else(|| missing("tombstone"))?);
            Output::of(&ChangeView {
                action: format!("reclaimed {} (ino {ino}) on {silo}", t.path),
                revision: rev(r.header),
                object: t,
            })
        }
        TopoCmd::Locate(a) => {
            let r = client.locate(&a.path, &a.site, read()).await?;
            Output::of(&LocateView::new(a.path.clone(), r))
        }
        TopoCmd::RecordWrite(a) => {
            let r = client
                .record_write(&a.path, &a.silo, a.size, a.mtime_ms, &a.checksum)
                .await?;
            let inode = r.inode.ok_or_else(|| missing("inode"))?;
            #[derive(Serialize)]
            struct Written {
                path: String,
                ino: u64,
                content_gen: u64,
                size: u64,
                mtime_ms: u64,
                silo: String,
                staled: Vec<String>,
            }
            let staled = if r.staled.is_empty() {
                String::new()
            } else {
                format!("; stale now: {}", r.staled.join(", "))
            };
            Output::of(&ChangeView {
                action: format!(
                    "recorded write of {} at {}: generation {}{staled}",
                    a.path, a.silo, inode.content_gen
                ),
                revision: rev(r.header),
                object: Written {
                    path: a.path.clone(),
                    ino: inode.ino,
                    content_gen: inode.content_gen,
                    size: inode.size,
                    mtime_ms: inode.mtime_ms,
                    silo: a.silo.clone(),
                    staled: r.staled,
                },
            })
        }
    }
}

#[cfg(test)]
mod tests;
