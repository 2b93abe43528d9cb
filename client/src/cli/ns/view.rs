//! Output views of the namespace commands: the stable JSON shape and the table rendering.

use serde::Serialize;

use crate::cli::output::View;
use crate::cli::table;
use crate::pb;

fn kind_name(kind: i32) -> &'static str {
    match pb::InodeKind::try_from(kind) {
        Ok(pb::InodeKind::Directory) => "dir",
        Ok(pb::InodeKind::File) => "file",
        Ok(pb::InodeKind::Symlink) => "symlink",
        _ => "unknown",
    }
}

/// `drwxr-xr-x` style.
pub fn mode_string(kind: i32, mode: u32) -> String {
    let t = match pb::InodeKind::try_from(kind) {
        Ok(pb::InodeKind::Directory) => 'd',
        Ok(pb::InodeKind::Symlink) => 'l',
        _ => '-',
    };
    let mut s = String::from(t);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms % 1000
    )
}

#[derive(Debug, Serialize)]
pub struct InodeView {
    pub ino: u64,
    pub kind: &'static str,
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime_ms: u64,
    pub ctime_ms: u64,
    pub content_gen: u64,
    pub create_revision: u64,
    pub mod_revision: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symlink_target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub child_count: Option<u64>,
}

impl From<&pb::Inode> for InodeView {
    fn from(i: &pb::Inode) -> Self {
        let is_dir = i.kind == pb::InodeKind::Directory as i32;
        InodeView {
            ino: i.ino,
            kind: kind_name(i.kind),
            mode: format!("{:04o}", i.mode),
            uid: i.uid,
            gid: i.gid,
            size: i.size,
            mtime_ms: i.mtime_ms,
            ctime_ms: i.ctime_ms,
            content_gen: i.content_gen,
            create_revision: i.create_revision,
            mod_revision: i.mod_revision,
            symlink_target: (!i.symlink_target.is_empty()).then(|| i.symlink_target.clone()),
            child_count: is_dir.then_some(i.child_count),
        }
    }
}

/// A namespace change: mkdir, touch, mv, ln.
#[derive(Debug, Serialize)]
pub struct ChangeView {
    pub action: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub inode: Option<InodeView>,
    pub revision: u64,
}

impl ChangeView {
    pub(super) fn new(
        action: &str,
        path: &str,
        inode: Option<pb::Inode>,
        header: Option<pb::ResponseHeader>,
    ) -> Self {
        ChangeView {
            action: action.to_string(),
            path: path.to_string(),
            from: None,
            inode: inode.as_ref().map(InodeView::from),
            revision: header.map(|h| h.revision).unwrap_or(0),
        }
    }
}

impl View for ChangeView {
    fn table(&self) -> String {
        let ino = self.inode.as_ref().map(|i| i.ino).unwrap_or(0);
        match &self.from {
            Some(f) => format!(
                "{}: {} -> {} (inode {ino}, revision {})\n",
                self.action, f, self.path, self.revision
            ),
            None => format!(
                "{}: {} (inode {ino}, revision {})\n",
                self.action, self.path, self.revision
            ),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct StatView {
    pub path: String,
    #[serde(flatten)]
    pub inode: InodeView,
    pub revision: u64,
}

impl StatView {
    pub(super) fn new(path: &str, inode: pb::Inode, header: Option<pb::ResponseHeader>) -> Self {
        StatView {
            path: path.to_string(),
            inode: InodeView::from(&inode),
            revision: header.map(|h| h.revision).unwrap_or(0),
        }
    }
}

impl View for StatView {
    fn table(&self) -> String {
        let i = &self.inode;
        let mut rows = vec![
            ("path", self.path.clone()),
            ("inode", i.ino.to_string()),
            ("kind", i.kind.to_string()),
            ("mode", i.mode.clone()),
            ("uid", i.uid.to_string()),
            ("gid", i.gid.to_string()),
            ("size", i.size.to_string()),
            ("mtime", format_ms(i.mtime_ms)),
            ("ctime", format_ms(i.ctime_ms)),
            ("content gen", i.content_gen.to_string()),
            ("create revision", i.create_revision.to_string()),
            ("mod revision", i.mod_revision.to_string()),
        ];
        if let Some(t) = &i.symlink_target {
            rows.push(("target", t.clone()));
        }
        if let Some(c) = i.child_count {
            rows.push(("entries", c.to_string()));
        }
        rows.push(("revision", self.revision.to_string()));
        let rows: Vec<Vec<String>> = rows
            .into_iter()
            .map(|(k, v)| vec![format!("{k}:"), v])
            .collect();
        table::render(&[], &rows)
    }
}

#[derive(Debug, Serialize)]
pub struct EntryView {
    pub name: String,
    pub ino: u64,
    pub kind: &'static str,
    /// Only with -l.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attrs: Option<InodeView>,
    #[serde(skip)]
    raw_kind: i32,
}

impl EntryView {
    pub(super) fn new(name: String, i: &pb::Inode, with_attrs: bool) -> Self {
        EntryView {
            name,
            ino: i.ino,
            kind: kind_name(i.kind),
            attrs: with_attrs.then(|| InodeView::from(i)),
            raw_kind: i.kind,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct LsView {
    pub path: String,
    #[serde(skip)]
    pub long: bool,
    pub entries: Vec<EntryView>,
    pub revision: u64,
}

impl View for LsView {
    fn table(&self) -> String {
        if !self.long {
            let mut s = String::new();
            for e in &self.entries {
                s.push_str(&e.name);
                if e.raw_kind == pb::InodeKind::Directory as i32 {
                    s.push('/');
                }
                s.push('\n');
            }
            return s;
        }
        let rows: Vec<Vec<String>> = self
            .entries
            .iter()
            .map(|e| match &e.attrs {
                Some(a) => {
                    let mode = u32::from_str_radix(&a.mode, 8).unwrap_or(0);
                    let mut name = e.name.clone();
                    if let Some(t) = &a.symlink_target {
                        name = format!("{name} -> {t}");
                    }
                    vec![
                        mode_string(e.raw_kind, mode),
                        a.uid.to_string(),
                        a.gid.to_string(),
                        a.size.to_string(),
                        format_ms(a.mtime_ms),
                        e.ino.to_string(),
                        name,
                    ]
                }
                None => vec![e.kind.to_string(), e.ino.to_string(), e.name.clone()],
            })
            .collect();
        let mut out = table::render(
            &["MODE", "UID", "GID", "SIZE", "MTIME", "INODE", "NAME"],
            &rows,
        );
        out.push_str(&format!("{} entries\n", self.entries.len()));
        out
    }
}

#[derive(Debug, Serialize)]
pub struct RmView {
    pub path: String,
    pub removed: u64,
    pub revision: u64,
}

impl View for RmView {
    fn table(&self) -> String {
        format!(
            "removed: {} ({} entries, revision {})\n",
            self.path, self.removed, self.revision
        )
    }
}
