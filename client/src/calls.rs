//! The two call shapes every service module uses: `write_call!` (one `seq` for the call and
//! all its retries, so the write applies exactly once) and `read_call!`. Declared before the
//! service modules in lib.rs; the call site must have `request`, `CallKind` and the service's
//! generated client in scope.

use metad_proto::v1 as pb;

use crate::client::Client;
use crate::config::ReadOptions;

macro_rules! write_call {
    ($self:ident, $svc:ident, $method:ident, $req:expr) => {{
        let seq = $self.next_seq();
        write_call!($self, seq, $svc, $method, $req)
    }};
    ($self:ident, $seq:ident, $svc:ident, $method:ident, $req:expr) => {{
        let seq = $seq;
        let mut req = $req;
        req.header = Some($self.seq_header(seq));
        $self
            .call(CallKind::Write { seq }, None, move |ch, t| {
                let req = req.clone();
                async move { $svc::new(ch).$method(request(req, t)).await }
            })
            .await
    }};
}

macro_rules! read_call {
    ($self:ident, $svc:ident, $method:ident, $req:expr) => {{
        let req = $req;
        $self
            .call(CallKind::Read, None, move |ch, t| {
                let req = req.clone();
                async move { $svc::new(ch).$method(request(req, t)).await }
            })
            .await
    }};
}

impl Client {
    /// A write header carrying this client's id and `seq`.
    pub(crate) fn seq_header(&self, seq: u64) -> pb::WriteHeader {
        pb::WriteHeader {
            client_id: self.inner.client_id.clone(),
            seq,
        }
    }

    pub(crate) fn read_options(&self, options: ReadOptions) -> Option<pb::ReadOptions> {
        Some(options.to_pb(self.inner.consistency))
    }
}
