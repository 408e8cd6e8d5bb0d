//! A master client: finds the leader among the given master addresses,
//! follows the hints followers give, and retries what is safe to retry until
//! a deadline (see [`crate::channels`]).

use std::future::Future;
use std::time::Duration;

use strata_common::types::AccessLevel;
use strata_common::{ErrorCode, Result, StrataError};
use strata_proto::master as pb;
use strata_proto::master::master_client::MasterClient as GrpcClient;
use tonic::transport::Channel;

use crate::channels::{Channels, LeaderRouter};

/// How long a call keeps retrying across masters before giving up.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(20);

pub struct MasterClient {
    router: LeaderRouter,
    channels: Channels,
    deadline: Duration,
}

impl MasterClient {
    /// A client of the masters at `masters` (`host:port` each; one is enough).
    pub fn new(masters: Vec<String>) -> Result<MasterClient> {
        let masters: Vec<String> =
            masters.into_iter().map(|m| m.trim().to_string()).filter(|m| !m.is_empty()).collect();
        if masters.is_empty() {
            return Err(StrataError::invalid("no master address given"));
        }
        Ok(MasterClient {
            router: LeaderRouter::new(masters),
            channels: Channels::default(),
            deadline: DEFAULT_DEADLINE,
        })
    }

    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    pub fn masters(&self) -> &[String] {
        self.router.members()
    }

    /// Runs `call` against the leader, following hints and retrying
    /// retryable failures until the deadline. `what` says what was being done.
    pub async fn call<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T>
    where
        F: FnMut(GrpcClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        self.router.call(&self.channels, self.deadline, what, |channel| call(GrpcClient::new(channel))).await
    }

    /// Asks one specific master for its own Raft view (no leader needed).
    pub async fn cluster_status_of(&self, address: &str) -> Result<pb::ClusterStatusResponse> {
        let mut client = GrpcClient::new(self.channels.get(address)?);
        let call = client.cluster_status(pb::ClusterStatusRequest {});
        match tokio::time::timeout(Duration::from_secs(2), call).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(status)) => Err(status.into()),
            Err(_) => Err(StrataError::new(ErrorCode::Timeout, format!("master {address} did not answer"))),
        }
    }

    pub async fn list_nodes(&self) -> Result<Vec<pb::NodeInfo>> {
        Ok(self.cluster_nodes().await?.nodes)
    }

    /// Nodes and the data rebuilds in progress.
    pub async fn cluster_nodes(&self) -> Result<pb::ListNodesResponse> {
        self.call("listing nodes", |mut c| async move { c.list_nodes(pb::ListNodesRequest {}).await }).await
    }

    /// Sets the volume's trash retention (`None` leaves it as it is).
    pub async fn set_volume_options(&self, volume: &str, trash_secs: Option<u64>) -> Result<pb::Volume> {
        let request = pb::SetVolumeOptionsRequest { name: volume.to_string(), trash_secs };
        self.call("setting volume options", |mut c| {
            let request = request.clone();
            async move { c.set_volume_options(request).await }
        })
        .await
    }

    /// The leader's recent events after `after_seq`, at most the newest `limit` (0: all kept).
    pub async fn list_events(&self, after_seq: u64, limit: u32) -> Result<pb::ListEventsResponse> {
        let request = pb::ListEventsRequest { after_seq, limit };
        self.call("listing events", |mut c| async move { c.list_events(request).await }).await
    }

    /// Drains a datanode; answers how many data partitions move away from it.
    pub async fn decommission_node(&self, node_id: u64) -> Result<u64> {
        let request = pb::DecommissionNodeRequest { node_id };
        let response =
            self.call("decommissioning a node", |mut c| async move { c.decommission_node(request).await }).await?;
        Ok(response.partitions_moved)
    }

    pub async fn create_volume(&self, request: pb::CreateVolumeRequest) -> Result<pb::Volume> {
        self.call("creating volume", |mut c| {
            let request = request.clone();
            async move { c.create_volume(request).await }
        })
        .await
    }

    pub async fn list_volumes(&self) -> Result<Vec<pb::Volume>> {
        let r = self
            .call("listing volumes", |mut c| async move { c.list_volumes(pb::ListVolumesRequest {}).await })
            .await?;
        Ok(r.volumes)
    }

    pub async fn get_volume(&self, name: &str) -> Result<pb::Volume> {
        let request = pb::GetVolumeRequest { name: name.to_string() };
        self.call("reading volume", |mut c| {
            let request = request.clone();
            async move { c.get_volume(request).await }
        })
        .await
    }

    /// Fresh blob ids [start, start + count) of `volume`; never handed out again.
    pub async fn alloc_blob_ids(&self, volume: &str, count: u64) -> Result<u64> {
        let request = pb::AllocBlobIdsRequest { volume: volume.to_string(), count };
        let response = self
            .call("allocating blob ids", |mut c| {
                let request = request.clone();
                async move { c.alloc_blob_ids(request).await }
            })
            .await?;
        Ok(response.start)
    }

    pub async fn delete_volume(&self, name: &str) -> Result<()> {
        let request = pb::DeleteVolumeRequest { name: name.to_string() };
        self.call("deleting volume", |mut c| {
            let request = request.clone();
            async move { c.delete_volume(request).await }
        })
        .await
        .map(drop)
    }

    pub async fn create_user(&self, name: &str) -> Result<pb::User> {
        let request = pb::CreateUserRequest { name: name.to_string() };
        self.call("creating user", |mut c| {
            let request = request.clone();
            async move { c.create_user(request).await }
        })
        .await
    }

    pub async fn list_users(&self) -> Result<Vec<pb::User>> {
        let r = self.call("listing users", |mut c| async move { c.list_users(pb::ListUsersRequest {}).await }).await?;
        Ok(r.users)
    }

    pub async fn delete_user(&self, name: &str) -> Result<()> {
        let request = pb::DeleteUserRequest { name: name.to_string() };
        self.call("deleting user", |mut c| {
            let request = request.clone();
            async move { c.delete_user(request).await }
        })
        .await
        .map(drop)
    }

    pub async fn create_access_key(&self, user: &str) -> Result<pb::AccessKey> {
        let request = pb::CreateAccessKeyRequest { user: user.to_string() };
        self.call("creating an access key", |mut c| {
            let request = request.clone();
            async move { c.create_access_key(request).await }
        })
        .await
    }

    /// Gives `access_key_id` `level` on `volume`; `None` takes it away.
    pub async fn set_bucket_grant(&self, volume: &str, access_key_id: &str, level: Option<AccessLevel>) -> Result<()> {
        let request = pb::SetBucketGrantRequest {
            volume: volume.to_string(),
            access_key_id: access_key_id.to_string(),
            level: AccessLevel::to_wire(level) as i32,
        };
        self.call("setting a bucket grant", |mut c| {
            let request = request.clone();
            async move { c.set_bucket_grant(request).await }
        })
        .await
        .map(drop)
    }

    /// Sets `volume`'s capacity; answers the volume as it now is.
    pub async fn set_volume_capacity(&self, volume: &str, capacity_bytes: u64) -> Result<pb::Volume> {
        let request = pb::SetVolumeCapacityRequest { name: volume.to_string(), capacity_bytes };
        self.call("setting a volume's capacity", |mut c| {
            let request = request.clone();
            async move { c.set_volume_capacity(request).await }
        })
        .await
    }

    /// Sets the directory quota rooted at inode `root` (0 in a limit: none).
    pub async fn set_quota(&self, volume: &str, root: u64, max_bytes: u64, max_inodes: u64) -> Result<pb::QuotaStatus> {
        let quota = Some(pb::Quota { root, max_bytes, max_inodes });
        let request = pb::SetQuotaRequest { volume: volume.to_string(), quota };
        self.call("setting a directory quota", |mut c| {
            let request = request.clone();
            async move { c.set_quota(request).await }
        })
        .await
    }

    pub async fn delete_quota(&self, volume: &str, root: u64) -> Result<()> {
        let request = pb::DeleteQuotaRequest { volume: volume.to_string(), root };
        self.call("removing a directory quota", |mut c| {
            let request = request.clone();
            async move { c.delete_quota(request).await }
        })
        .await
        .map(drop)
    }

    /// A volume's quotas with their usage (seconds old at most).
    pub async fn list_quotas(&self, volume: &str) -> Result<Vec<pb::QuotaStatus>> {
        let request = pb::ListQuotasRequest { volume: volume.to_string() };
        let reply = self
            .call("listing directory quotas", |mut c| {
                let request = request.clone();
                async move { c.list_quotas(request).await }
            })
            .await?;
        Ok(reply.quotas)
    }

    pub async fn delete_access_key(&self, access_key_id: &str) -> Result<()> {
        let request = pb::DeleteAccessKeyRequest { access_key_id: access_key_id.to_string() };
        self.call("deleting an access key", |mut c| {
            let request = request.clone();
            async move { c.delete_access_key(request).await }
        })
        .await
        .map(drop)
    }

    /// One access key with its secret (a gateway checking a signature).
    pub async fn get_access_key(&self, access_key_id: &str) -> Result<pb::AccessKey> {
        let request = pb::GetAccessKeyRequest { access_key_id: access_key_id.to_string() };
        self.call("looking up an access key", |mut c| {
            let request = request.clone();
            async move { c.get_access_key(request).await }
        })
        .await
    }
}
