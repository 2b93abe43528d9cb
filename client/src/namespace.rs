//! Namespace and Txn calls (`metad.v1.Namespace`): directories, files, symlinks, attributes,
//! paged directory listings and transactions.
//!
//! Every write takes one seq from the client and all its retries reuse `(client_id, seq)`, so
//! the cluster applies it exactly once (an unknown outcome is [`ClientError::Ambiguous`]). The
//! `*_with` variants take the full request (its `header` is filled in here) for the optional
//! fields.
//!
//! ```no_run
//! # async fn demo(client: metad_client::Client) -> Result<(), metad_client::ClientError> {
//! use metad_client::{pb, ReadOptions};
//! client.mkdir("/ml/imagenet", true).await?;
//! client.create("/ml/imagenet/train.tar").await?;
//! client.rename("/ml/imagenet/train.tar", "/ml/train.tar", pb::RenameMode::NoReplace).await?;
//! let page = client.read_dir("/ml", "", 100, false, ReadOptions::default()).await?;
//! for e in page.entries { println!("{}", e.name); }
//! # Ok(()) }
//! ```

use metad_proto::v1 as pb;
use metad_proto::v1::namespace_client::NamespaceClient;

use crate::client::{request, Client};
use crate::config::ReadOptions;
use crate::error::{CallKind, ClientError};

/// Sends one namespace write with a fresh seq (reused by every retry).
macro_rules! ns_write {
    ($self:ident, $req:expr, $method:ident) => {{
        let seq = $self.next_seq();
        let mut req = $req;
        req.header = Some($self.ns_header(seq));
        $self
            .call(CallKind::Write { seq }, None, move |ch, t| {
                let req = req.clone();
                async move { NamespaceClient::new(ch).$method(request(req, t)).await }
            })
            .await
    }};
}

/// Sends one namespace read.
macro_rules! ns_read {
    ($self:ident, $req:expr, $method:ident) => {{
        let req = $req;
        $self
            .call(CallKind::Read, None, move |ch, t| {
                let req = req.clone();
                async move { NamespaceClient::new(ch).$method(request(req, t)).await }
            })
            .await
    }};
}

impl Client {
    fn ns_header(&self, seq: u64) -> pb::WriteHeader {
        pb::WriteHeader {
            client_id: self.inner.client_id.clone(),
            seq,
        }
    }

    /// Creates directory `path`; with `parents`, also missing ancestors (and succeeds without
    /// change if it already is a directory).
    pub async fn mkdir(&self, path: &str, parents: bool) -> Result<pb::MkdirResponse, ClientError> {
        self.mkdir_with(pb::MkdirRequest {
            path: path.to_string(),
            parents,
            ..Default::default()
        })
        .await
    }

    /// [`Client::mkdir`] with every field (mode, uid, gid).
    pub async fn mkdir_with(
        &self,
        req: pb::MkdirRequest,
    ) -> Result<pb::MkdirResponse, ClientError> {
        ns_write!(self, req, mkdir)
    }

    /// Creates file `path` (ALREADY_EXISTS if the name is taken).
    pub async fn create(&self, path: &str) -> Result<pb::CreateResponse, ClientError> {
        self.create_with(pb::CreateRequest {
            path: path.to_string(),
            ..Default::default()
        })
        .await
    }

    /// [`Client::create`] with every field (mode, uid, gid, size, mtime).
    pub async fn create_with(
        &self,
        req: pb::CreateRequest,
    ) -> Result<pb::CreateResponse, ClientError> {
        ns_write!(self, req, create)
    }

    /// Creates symlink `path` holding `target` (never followed by metad).
    pub async fn symlink(
        &self,
        path: &str,
        target: &str,
    ) -> Result<pb::SymlinkResponse, ClientError> {
        ns_write!(
            self,
            pb::SymlinkRequest {
                path: path.to_string(),
                target: target.to_string(),
                ..Default::default()
            },
            symlink
        )
    }

    /// Attributes of the object at `path`.
    pub async fn stat(
        &self,
        path: &str,
        options: ReadOptions,
    ) -> Result<pb::StatResponse, ClientError> {
        ns_read!(
            self,
            pb::StatRequest {
                read: Some(options.to_pb(self.inner.consistency)),
                target: Some(pb::stat_request::Target::Path(path.to_string())),
            },
            stat
        )
    }

    /// Attributes and current path of inode `ino`.
    pub async fn stat_ino(
        &self,
        ino: u64,
        options: ReadOptions,
    ) -> Result<pb::StatResponse, ClientError> {
        ns_read!(
            self,
            pb::StatRequest {
                read: Some(options.to_pb(self.inner.consistency)),
                target: Some(pb::stat_request::Target::Ino(ino)),
            },
            stat
        )
    }

    /// The entry `name` of directory inode `parent`.
    pub async fn lookup(
        &self,
        parent: u64,
        name: &str,
        options: ReadOptions,
    ) -> Result<pb::LookupResponse, ClientError> {
        ns_read!(
            self,
            pb::LookupRequest {
                read: Some(options.to_pb(self.inner.consistency)),
                parent,
                name: name.to_string(),
            },
            lookup
        )
    }

    /// One page of directory `path`: entries named after `start_after` ("" = from the start),
    /// at most `limit` (0 = 1000, at most 10 000). Continue with `next_start_after` until it is
    /// empty.
    pub async fn read_dir(
        &self,
        path: &str,
        start_after: &str,
        limit: u32,
        with_attrs: bool,
        options: ReadOptions,
    ) -> Result<pb::ReadDirResponse, ClientError> {
        ns_read!(
            self,
            pb::ReadDirRequest {
                read: Some(options.to_pb(self.inner.consistency)),
                path: path.to_string(),
                start_after: start_after.to_string(),
                limit,
                with_attrs,
            },
            read_dir
        )
    }

    /// Renames `src` to `dst` atomically (POSIX rules; see `pb::RenameMode`).
    pub async fn rename(
        &self,
        src: &str,
        dst: &str,
        mode: pb::RenameMode,
    ) -> Result<pb::RenameResponse, ClientError> {
        ns_write!(
            self,
            pb::RenameRequest {
                header: None,
                src: src.to_string(),
                dst: dst.to_string(),
                mode: mode as i32,
            },
            rename
        )
    }

    /// Removes a file or symlink.
    pub async fn unlink(&self, path: &str) -> Result<pb::UnlinkResponse, ClientError> {
        ns_write!(
            self,
            pb::UnlinkRequest {
                header: None,
                path: path.to_string(),
            },
            unlink
        )
    }

    /// Removes an empty directory.
    pub async fn rmdir(&self, path: &str) -> Result<pb::RmdirResponse, ClientError> {
        ns_write!(
            self,
            pb::RmdirRequest {
                header: None,
                path: path.to_string(),
            },
            rmdir
        )
    }

    /// Sets the given attributes of `req.path` (at least one of mode, uid, gid, size, mtime).
    pub async fn set_attr(
        &self,
        req: pb::SetAttrRequest,
    ) -> Result<pb::SetAttrResponse, ClientError> {
        ns_write!(self, req, set_attr)
    }

    /// Runs a transaction: `compares`, then `then_ops` if all hold, else `else_ops`; atomic.
    pub async fn txn(
        &self,
        compares: Vec<pb::Compare>,
        then_ops: Vec<pb::TxnStep>,
        else_ops: Vec<pb::TxnStep>,
    ) -> Result<pb::TxnResponse, ClientError> {
        ns_write!(
            self,
            pb::TxnRequest {
                header: None,
                compares,
                then_ops,
                else_ops,
            },
            txn
        )
    }
}
