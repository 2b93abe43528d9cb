//! Topology and location calls: sites and silos (`metad.v1.Topology`), instances, Locate,
//! RecordWrite and tombstones (`metad.v1.Location`). Every write takes one `seq` and all its
//! retries reuse it (exactly once); reads take [`ReadOptions`]. Answers are the wire
//! responses, whose `header` says which revision they reflect.

use std::collections::BTreeMap;

use metad_proto::v1 as pb;
use metad_proto::v1::location_client::LocationClient;
use metad_proto::v1::topology_client::TopologyClient;

use crate::client::{request, Client};
use crate::config::ReadOptions;
use crate::error::{CallKind, ClientError};

/// A silo to register (see [`Client::register_silo`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SiloSpec {
    pub name: String,
    pub site: String,
    pub kind: pb::SiloKind,
    pub tier: pb::SiloTier,
    pub capacity_bytes: u64,
    pub cost_per_gib_month: f64,
    /// A directory (posix, nfs, nvme) or a URL (`s3://bucket/prefix`) for agents.
    pub root: String,
    pub labels: BTreeMap<String, String>,
}

/// Changes to a silo (see [`Client::update_silo`]); `None` / empty = unchanged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SiloUpdate {
    pub state: Option<pb::SiloState>,
    pub used_bytes: Option<u64>,
    pub capacity_bytes: Option<u64>,
    pub set_labels: BTreeMap<String, String>,
    pub remove_labels: Vec<String>,
}

/// Optional fields of [`Client::add_instance`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceSpec {
    /// Default: the file's size.
    pub bytes: Option<u64>,
    pub checksum: String,
    /// Default: the file's current content generation.
    pub content_gen: Option<u64>,
    /// Where the bytes are, relative to the silo root; "" = the file's path.
    pub location: String,
}

impl Client {
    /// Registers a site. `ALREADY_EXISTS` if the name is taken.
    pub async fn register_site(
        &self,
        name: &str,
        description: &str,
        region: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<pb::RegisterSiteResponse, ClientError> {
        write_call!(
            self,
            TopologyClient,
            register_site,
            pb::RegisterSiteRequest {
                header: None,
                name: name.to_string(),
                description: description.to_string(),
                region: region.to_string(),
                labels,
            }
        )
    }

    /// Registers a silo at an existing site; it starts online.
    pub async fn register_silo(
        &self,
        spec: SiloSpec,
    ) -> Result<pb::RegisterSiloResponse, ClientError> {
        write_call!(
            self,
            TopologyClient,
            register_silo,
            pb::RegisterSiloRequest {
                header: None,
                name: spec.name,
                site: spec.site,
                kind: spec.kind as i32,
                tier: spec.tier as i32,
                capacity_bytes: spec.capacity_bytes,
                cost_per_gib_month: spec.cost_per_gib_month,
                labels: spec.labels,
                root: spec.root,
            }
        )
    }

    /// Changes a silo's state, usage, capacity or labels.
    pub async fn update_silo(
        &self,
        name: &str,
        update: SiloUpdate,
    ) -> Result<pb::UpdateSiloResponse, ClientError> {
        write_call!(
            self,
            TopologyClient,
            update_silo,
            pb::UpdateSiloRequest {
                header: None,
                name: name.to_string(),
                state: update.state.map(|s| s as i32).unwrap_or(0),
                used_bytes: update.used_bytes,
                capacity_bytes: update.capacity_bytes,
                set_labels: update.set_labels,
                remove_labels: update.remove_labels,
            }
        )
    }

    /// Removes a silo; `FAILED_PRECONDITION` while it holds a file's only valid instance.
    pub async fn remove_silo(&self, name: &str) -> Result<pb::RemoveSiloResponse, ClientError> {
        write_call!(
            self,
            TopologyClient,
            remove_silo,
            pb::RemoveSiloRequest {
                header: None,
                name: name.to_string(),
            }
        )
    }

    /// Every site.
    pub async fn list_sites(
        &self,
        options: ReadOptions,
    ) -> Result<pb::ListSitesResponse, ClientError> {
        read_call!(
            self,
            TopologyClient,
            list_sites,
            pb::ListSitesRequest {
                read: Some(options.to_pb(self.inner.consistency)),
            }
        )
    }

    /// Every silo, or only those at `site` (if non-empty).
    pub async fn list_silos(
        &self,
        site: &str,
        options: ReadOptions,
    ) -> Result<pb::ListSilosResponse, ClientError> {
        read_call!(
            self,
            TopologyClient,
            list_silos,
            pb::ListSilosRequest {
                read: Some(options.to_pb(self.inner.consistency)),
                site: site.to_string(),
            }
        )
    }

    /// Records that `silo` holds a copy of the file at `path`.
    pub async fn add_instance(
        &self,
        path: &str,
        silo: &str,
        spec: InstanceSpec,
    ) -> Result<pb::AddInstanceResponse, ClientError> {
        write_call!(
            self,
            LocationClient,
            add_instance,
            pb::AddInstanceRequest {
                header: None,
                path: path.to_string(),
                silo: silo.to_string(),
                bytes: spec.bytes,
                checksum: spec.checksum,
                content_gen: spec.content_gen,
                location: spec.location,
            }
        )
    }

    /// The readable instances of `path`, nearest to `client_site` first.
    pub async fn locate(
        &self,
        path: &str,
        client_site: &str,
        options: ReadOptions,
    ) -> Result<pb::LocateResponse, ClientError> {
        read_call!(
            self,
            LocationClient,
            locate,
            pb::LocateRequest {
                read: Some(options.to_pb(self.inner.consistency)),
                path: path.to_string(),
                client_site: client_site.to_string(),
            }
        )
    }

    /// The file at `path` was rewritten at `silo` (new `size`, optional `mtime_ms`): bumps its
    /// content generation and stales every other copy.
    pub async fn record_write(
        &self,
        path: &str,
        silo: &str,
        size: u64,
        mtime_ms: Option<u64>,
        checksum: &str,
    ) -> Result<pb::RecordWriteResponse, ClientError> {
        write_call!(
            self,
            LocationClient,
            record_write,
            pb::RecordWriteRequest {
                header: None,
                path: path.to_string(),
                silo: silo.to_string(),
                size,
                mtime_ms,
                checksum: checksum.to_string(),
                location: String::new(),
            }
        )
    }

    /// One page of the instances on `silo` (`cursor` "" = first page; `limit` 0 = 1000).
    pub async fn list_instances(
        &self,
        silo: &str,
        cursor: &str,
        limit: u32,
        options: ReadOptions,
    ) -> Result<pb::ListInstancesResponse, ClientError> {
        read_call!(
            self,
            LocationClient,
            list_instances,
            pb::ListInstancesRequest {
                read: Some(options.to_pb(self.inner.consistency)),
                silo: silo.to_string(),
                cursor: cursor.to_string(),
                limit,
            }
        )
    }

    /// One page of the tombstones (deleted files' instances to reclaim) on `silo`.
    pub async fn list_tombstones(
        &self,
        silo: &str,
        cursor: &str,
        limit: u32,
        options: ReadOptions,
    ) -> Result<pb::ListTombstonesResponse, ClientError> {
        read_call!(
            self,
            LocationClient,
            list_tombstones,
            pb::ListTombstonesRequest {
                read: Some(options.to_pb(self.inner.consistency)),
                silo: silo.to_string(),
                cursor: cursor.to_string(),
                limit,
            }
        )
    }

    /// The agent of `silo` has deleted the bytes of inode `ino`'s tombstone.
    pub async fn confirm_reclaimed(
        &self,
        silo: &str,
        ino: u64,
    ) -> Result<pb::ConfirmReclaimedResponse, ClientError> {
        write_call!(
            self,
            LocationClient,
            confirm_reclaimed,
            pb::ConfirmReclaimedRequest {
                header: None,
                silo: silo.to_string(),
                ino,
            }
        )
    }
}
