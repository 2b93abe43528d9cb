//! The Watch stream: `impl Client` methods. Opening the stream goes through the retry loop
//! (any node can serve it, a pinned view uses its node); once open, the stream is the caller's
//! to read. Resume after a disconnect with `after_revision` = the last `progress_revision`.

use metad_proto::v1::watch_client::WatchClient;
use metad_proto::v1::{WatchRequest, WatchResponse};

use crate::error::CallKind;
use crate::{Client, ClientError};

/// An open watch stream.
pub type WatchStream = tonic::Streaming<WatchResponse>;

impl Client {
    /// Opens a watch. See `metad.v1.WatchRequest` for the filter and start semantics.
    pub async fn watch(&self, req: WatchRequest) -> Result<WatchStream, ClientError> {
        self.call(CallKind::Read, None, move |ch, _t| {
            let req = req.clone();
            // No deadline on the stream itself: it lives until the caller drops it.
            async move { WatchClient::new(ch).watch(tonic::Request::new(req)).await }
        })
        .await
    }

    /// Reads the next message of a watch stream, mapping errors (e.g. COMPACTED) to
    /// `ClientError` with their stable code. `Ok(None)` when the server ended the stream.
    pub async fn next_watch_message(
        stream: &mut WatchStream,
    ) -> Result<Option<WatchResponse>, ClientError> {
        stream
            .message()
            .await
            .map_err(|st| crate::error::classify(&st, CallKind::Read, "watch stream"))
    }
}
