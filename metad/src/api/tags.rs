//! gRPC Tags service: SetTags/RemoveTags (proposed through Raft as `TagOp`), GetTags,
//! FindByTags (server-streaming batches from the tag index) and ListTagKeys, all reads served
//! by `sm::tags` over one consistent view after the requested read barrier.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use metad_proto::raft::v1::{command::Op, reply};
use metad_proto::v1::tags_server::{Tags, TagsServer};
use metad_proto::v1::{
    tag_op, EffectiveTag, FindByTagsRequest, FindByTagsResponse, GetTagsRequest, GetTagsResponse,
    ListTagKeysRequest, ListTagKeysResponse, RemoveTags, RemoveTagsRequest, RemoveTagsResponse,
    SetTags, SetTagsRequest, SetTagsResponse, TagKeyCount, TagMatch, TagOp, TagReply,
};
use tonic::transport::server::Router;
use tonic::{Request, Response, Status};

use super::{instrumented, MAX_MESSAGE_BYTES};
use crate::error::NodeError;
use crate::node::NodeCore;
use crate::sm::model::resolve_existing;
use crate::sm::tags::{self as smtags, find};

/// Matches per streamed FindByTags message.
const FIND_BATCH: usize = 1000;

pub(crate) fn add_services(router: Router, core: &Arc<NodeCore>) -> Router {
    router.add_service(
        TagsServer::new(TagsApi { core: core.clone() })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
}

pub struct TagsApi {
    core: Arc<NodeCore>,
}

impl TagsApi {
    async fn write(
        &self,
        header: Option<metad_proto::v1::WriteHeader>,
        op: tag_op::Op,
    ) -> Result<(TagReply, u64), NodeError> {
        let reply = super::propose(&self.core, header, Op::Tags(TagOp { op: Some(op) })).await?;
        match reply.result {
            Some(reply::Result::Tags(t)) => Ok((t, reply.revision)),
            _ => Err(NodeError::Internal("reply kind mismatch".into())),
        }
    }
}

fn limit_of(field: &str, n: u32) -> Result<usize, NodeError> {
    match n as usize {
        0 => Ok(find::DEFAULT_LIMIT),
        n if n > find::MAX_LIMIT => Err(NodeError::InvalidArgument(format!(
            "{field}: {n} is above the maximum {}",
            find::MAX_LIMIT
        ))),
        n => Ok(n),
    }
}

type FindStream = Pin<Box<dyn Stream<Item = Result<FindByTagsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Tags for TagsApi {
    async fn set_tags(
        &self,
        req: Request<SetTagsRequest>,
    ) -> Result<Response<SetTagsResponse>, Status> {
        let r = req.into_inner();
        instrumented(&self.core, "Tags/SetTags", async {
            let (t, rev) = self
                .write(
                    r.header,
                    tag_op::Op::Set(SetTags {
                        path: r.path,
                        tags: r.tags,
                        inherit: r.inherit,
                    }),
                )
                .await?;
            Ok(Response::new(SetTagsResponse {
                header: super::header(&self.core, rev),
                changed: t.changed,
            }))
        })
        .await
    }

    async fn remove_tags(
        &self,
        req: Request<RemoveTagsRequest>,
    ) -> Result<Response<RemoveTagsResponse>, Status> {
        let r = req.into_inner();
        instrumented(&self.core, "Tags/RemoveTags", async {
            let (t, rev) = self
                .write(
                    r.header,
                    tag_op::Op::Remove(RemoveTags {
                        path: r.path,
                        keys: r.keys,
                    }),
                )
                .await?;
            Ok(Response::new(RemoveTagsResponse {
                header: super::header(&self.core, rev),
                removed: t.changed,
            }))
        })
        .await
    }

    async fn get_tags(
        &self,
        req: Request<GetTagsRequest>,
    ) -> Result<Response<GetTagsResponse>, Status> {
        let r = req.into_inner();
        instrumented(&self.core, "Tags/GetTags", async {
            let ((ino, tags), rev) = super::query(&self.core, r.read.as_ref(), |kv| {
                let inode = resolve_existing(kv, "path", &r.path)?;
                let tags: Vec<EffectiveTag> = if r.effective {
                    smtags::effective_tags(kv, &inode)?
                        .into_iter()
                        .map(|(key, t)| EffectiveTag {
                            key,
                            value: t.value,
                            inherit: t.inherit,
                            source: t.source.map(|(_, p)| p).unwrap_or_default(),
                        })
                        .collect()
                } else {
                    smtags::own_tags(kv, inode.ino)?
                        .into_iter()
                        .map(|(key, t)| EffectiveTag {
                            key,
                            value: t.value,
                            inherit: t.inherit,
                            source: String::new(),
                        })
                        .collect()
                };
                Ok((inode.ino, tags))
            })
            .await?;
            Ok(Response::new(GetTagsResponse {
                header: super::header(&self.core, rev),
                ino,
                tags,
            }))
        })
        .await
    }

    type FindByTagsStream = FindStream;

    async fn find_by_tags(
        &self,
        req: Request<FindByTagsRequest>,
    ) -> Result<Response<FindStream>, Status> {
        let r = req.into_inner();
        instrumented(&self.core, "Tags/FindByTags", async {
            let limit = limit_of("limit", r.limit)?;
            let (page, rev) = super::query(&self.core, r.read.as_ref(), |kv| {
                find::find_by_tags(
                    kv,
                    &find::FindQuery {
                        scope: &r.scope,
                        expr: &r.expr,
                        cursor: &r.cursor,
                        limit,
                    },
                )
            })
            .await?;
            let header = super::header(&self.core, rev);
            let mut batches: Vec<FindByTagsResponse> = page
                .matches
                .chunks(FIND_BATCH)
                .map(|c| FindByTagsResponse {
                    header,
                    matches: c
                        .iter()
                        .map(|m| TagMatch {
                            ino: m.ino,
                            path: m.path.clone(),
                            kind: m.kind as i32,
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect();
            if batches.is_empty() {
                batches.push(FindByTagsResponse {
                    header,
                    ..Default::default()
                });
            }
            if let Some(first) = batches.first_mut() {
                first.plan = page.plan;
            }
            if let Some(last) = batches.last_mut() {
                last.next_cursor = page.next_cursor.unwrap_or_default();
                last.done = true;
            }
            let s: FindStream = Box::pin(futures::stream::iter(batches.into_iter().map(Ok)));
            Ok(Response::new(s))
        })
        .await
    }

    async fn list_tag_keys(
        &self,
        req: Request<ListTagKeysRequest>,
    ) -> Result<Response<ListTagKeysResponse>, Status> {
        let r = req.into_inner();
        instrumented(&self.core, "Tags/ListTagKeys", async {
            let limit = limit_of("limit", r.limit)?;
            let (keys, rev) = super::query(&self.core, r.read.as_ref(), |kv| {
                // One extra row tells whether another page follows.
                Ok(smtags::list_keys(kv, &r.after, limit + 1)?)
            })
            .await?;
            let more = keys.len() > limit;
            let keys: Vec<TagKeyCount> = keys
                .into_iter()
                .take(limit)
                .map(|(key, count)| TagKeyCount { key, count })
                .collect();
            let next_after = match (more, keys.last()) {
                (true, Some(k)) => k.key.clone(),
                _ => String::new(),
            };
            Ok(Response::new(ListTagKeysResponse {
                header: super::header(&self.core, rev),
                keys,
                next_after,
            }))
        })
        .await
    }
}
