//! Tags calls (`metad.v1.Tags`): set/remove tags exactly once, read own or effective tags,
//! FindByTags (streamed batches collected into one page with a resumable cursor) and the
//! tag-key catalogue.

use metad_proto::v1 as pb;
use metad_proto::v1::tags_client::TagsClient;

use crate::client::{request, Client};
use crate::config::ReadOptions;
use crate::error::{CallKind, ClientError};
use crate::register::Header;

/// One tag as returned by [`Client::get_tags`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagEntry {
    pub key: String,
    pub value: String,
    /// Marked inheritable where it is set.
    pub inherit: bool,
    /// `None` for the inode's own tag, else the ancestor path it is inherited from.
    pub source: Option<String>,
}

/// Reply of [`Client::get_tags`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagsResult {
    pub ino: u64,
    /// Sorted by key.
    pub tags: Vec<TagEntry>,
    pub header: Header,
}

/// Reply of [`Client::set_tags`] and [`Client::remove_tags`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagChange {
    /// Keys whose value or inherit flag changed (set) or that were removed, sorted.
    pub keys: Vec<String>,
    pub header: Header,
}

/// One inode matched by [`Client::find_by_tags`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundInode {
    pub ino: u64,
    pub path: String,
    pub kind: pb::InodeKind,
}

/// One page of [`Client::find_by_tags`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindResult {
    /// In inode-number order.
    pub matches: Vec<FoundInode>,
    /// `Some(cursor)` if more matches follow.
    pub next_cursor: Option<String>,
    /// How the server used the index.
    pub plan: String,
    pub header: Header,
}

/// One page of [`Client::list_tag_keys`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagKeysResult {
    /// (key, number of inodes setting it), in key order.
    pub keys: Vec<(String, u64)>,
    /// `Some(key)` to pass as `after` for the next page.
    pub next_after: Option<String>,
    pub header: Header,
}

fn nonempty(s: String) -> Option<String> {
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}

impl Client {
    fn tags_write_header(&self, seq: u64) -> pb::WriteHeader {
        pb::WriteHeader {
            client_id: self.inner.client_id.clone(),
            seq,
        }
    }

    /// Sets `tags` on `path` exactly once; with `inherit` they also apply to every descendant
    /// of a directory that does not set the key itself.
    pub async fn set_tags(
        &self,
        path: &str,
        tags: &[(String, String)],
        inherit: bool,
    ) -> Result<TagChange, ClientError> {
        let seq = self.next_seq();
        let req = pb::SetTagsRequest {
            header: Some(self.tags_write_header(seq)),
            path: path.to_string(),
            tags: tags
                .iter()
                .map(|(k, v)| pb::Tag {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
            inherit,
        };
        let resp = self
            .call(CallKind::Write { seq }, None, move |ch, t| {
                let req = req.clone();
                async move { TagsClient::new(ch).set_tags(request(req, t)).await }
            })
            .await?;
        Ok(TagChange {
            keys: resp.changed,
            header: resp.header.into(),
        })
    }

    /// Removes tags by key exactly once (keys not set are ignored).
    pub async fn remove_tags(&self, path: &str, keys: &[String]) -> Result<TagChange, ClientError> {
        let seq = self.next_seq();
        let req = pb::RemoveTagsRequest {
            header: Some(self.tags_write_header(seq)),
            path: path.to_string(),
            keys: keys.to_vec(),
        };
        let resp = self
            .call(CallKind::Write { seq }, None, move |ch, t| {
                let req = req.clone();
                async move { TagsClient::new(ch).remove_tags(request(req, t)).await }
            })
            .await?;
        Ok(TagChange {
            keys: resp.removed,
            header: resp.header.into(),
        })
    }

    /// The own tags of `path`, or with `effective` own + inherited (with their source).
    pub async fn get_tags(
        &self,
        path: &str,
        effective: bool,
        options: ReadOptions,
    ) -> Result<TagsResult, ClientError> {
        let req = pb::GetTagsRequest {
            read: Some(options.to_pb(self.inner.consistency)),
            path: path.to_string(),
            effective,
        };
        let resp = self
            .call(CallKind::Read, None, move |ch, t| {
                let req = req.clone();
                async move { TagsClient::new(ch).get_tags(request(req, t)).await }
            })
            .await?;
        Ok(TagsResult {
            ino: resp.ino,
            tags: resp
                .tags
                .into_iter()
                .map(|t| TagEntry {
                    key: t.key,
                    value: t.value,
                    inherit: t.inherit,
                    source: nonempty(t.source),
                })
                .collect(),
            header: resp.header.into(),
        })
    }

    /// One page (at most `limit`, 0 = 1000, ≤ 10 000) of the inodes under `scope` whose
    /// effective tags satisfy `expr`, resuming after `cursor` (None = from the start).
    pub async fn find_by_tags(
        &self,
        scope: &str,
        expr: &str,
        cursor: Option<&str>,
        limit: u32,
        options: ReadOptions,
    ) -> Result<FindResult, ClientError> {
        let req = pb::FindByTagsRequest {
            read: Some(options.to_pb(self.inner.consistency)),
            scope: scope.to_string(),
            expr: expr.to_string(),
            cursor: cursor.unwrap_or_default().to_string(),
            limit,
        };
        let batches = self
            .call(CallKind::Read, None, move |ch, t| {
                let req = req.clone();
                async move {
                    let mut s = TagsClient::new(ch)
                        .find_by_tags(request(req, t))
                        .await?
                        .into_inner();
                    let mut all = Vec::new();
                    while let Some(b) = s.message().await? {
                        all.push(b);
                    }
                    Ok(tonic::Response::new(all))
                }
            })
            .await?;
        let mut out = FindResult {
            matches: Vec::new(),
            next_cursor: None,
            plan: String::new(),
            header: Header::default(),
        };
        for b in batches {
            if !b.plan.is_empty() {
                out.plan = b.plan;
            }
            out.header = b.header.into();
            out.matches
                .extend(b.matches.into_iter().map(|m| FoundInode {
                    ino: m.ino,
                    path: m.path,
                    kind: pb::InodeKind::try_from(m.kind).unwrap_or(pb::InodeKind::Unspecified),
                }));
            if b.done {
                out.next_cursor = nonempty(b.next_cursor);
            }
        }
        Ok(out)
    }

    /// Every match of [`Client::find_by_tags`], following cursors page by page.
    pub async fn find_all_by_tags(
        &self,
        scope: &str,
        expr: &str,
        options: ReadOptions,
    ) -> Result<Vec<FoundInode>, ClientError> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self
                .find_by_tags(scope, expr, cursor.as_deref(), 10_000, options)
                .await?;
            all.extend(page.matches);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(all),
            }
        }
    }

    /// The tag-key catalogue: keys after `after` ("" = from the start), at most `limit`.
    pub async fn list_tag_keys(
        &self,
        after: &str,
        limit: u32,
        options: ReadOptions,
    ) -> Result<TagKeysResult, ClientError> {
        let req = pb::ListTagKeysRequest {
            read: Some(options.to_pb(self.inner.consistency)),
            after: after.to_string(),
            limit,
        };
        let resp = self
            .call(CallKind::Read, None, move |ch, t| {
                let req = req.clone();
                async move { TagsClient::new(ch).list_tag_keys(request(req, t)).await }
            })
            .await?;
        Ok(TagKeysResult {
            keys: resp.keys.into_iter().map(|k| (k.key, k.count)).collect(),
            next_after: nonempty(resp.next_after),
            header: resp.header.into(),
        })
    }
}
