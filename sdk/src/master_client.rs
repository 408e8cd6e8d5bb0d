//! A master client that finds the leader among the given master addresses,
//! follows the leader hints followers give, and retries what is safe to retry
//! until a deadline.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use strata_common::{ErrorCode, Result, StrataError};
use strata_proto::master as pb;
use strata_proto::master::master_client::MasterClient as GrpcClient;
use tonic::transport::{Channel, Endpoint};

/// How long a call keeps retrying across masters before giving up.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(20);

pub struct MasterClient {
    masters: Vec<String>,
    leader: Mutex<Option<String>>,
    channels: Mutex<HashMap<String, Channel>>,
    deadline: Duration,
}

fn channel_for(address: &str) -> Result<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| StrataError::invalid(format!("master address {address:?}: {e}")))?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(15))
        .tcp_nodelay(true);
    Ok(endpoint.connect_lazy())
}

impl MasterClient {
    /// A client of the masters at `masters` (`host:port` each; one is enough).
    pub fn new(masters: Vec<String>) -> Result<MasterClient> {
        let masters: Vec<String> = masters
            .into_iter()
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty())
            .collect();
        if masters.is_empty() {
            return Err(StrataError::invalid("no master address given"));
        }
        Ok(MasterClient {
            masters,
            leader: Mutex::new(None),
            channels: Mutex::new(HashMap::new()),
            deadline: DEFAULT_DEADLINE,
        })
    }

    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    pub fn masters(&self) -> &[String] {
        &self.masters
    }

    fn grpc(&self, address: &str) -> Result<GrpcClient<Channel>> {
        let mut channels = self.channels.lock().unwrap();
        let channel = match channels.get(address) {
            Some(c) => c.clone(),
            None => {
                let c = channel_for(address)?;
                channels.insert(address.to_string(), c.clone());
                c
            }
        };
        Ok(GrpcClient::new(channel))
    }

    /// The order in which to try masters: the known leader first.
    fn candidates(&self) -> Vec<String> {
        let mut order = Vec::with_capacity(self.masters.len() + 1);
        if let Some(leader) = self.leader.lock().unwrap().clone() {
            order.push(leader);
        }
        for m in &self.masters {
            if !order.contains(m) {
                order.push(m.clone());
            }
        }
        order
    }

    /// Runs `call` against the leader, following hints and retrying
    /// retryable failures until the deadline. `what` says what was being done.
    pub async fn call<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T>
    where
        F: FnMut(GrpcClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(50);
        let mut last_error = StrataError::unavailable("no master was tried");
        loop {
            let mut queue = self.candidates();
            let mut tried = Vec::new();
            while let Some(address) = queue.first().cloned() {
                queue.remove(0);
                if tried.contains(&address) {
                    continue;
                }
                tried.push(address.clone());
                match call(self.grpc(&address)?).await {
                    Ok(response) => {
                        *self.leader.lock().unwrap() = Some(address);
                        return Ok(response.into_inner());
                    }
                    Err(status) => {
                        let err = StrataError::from(status);
                        if !err.is_retryable() {
                            return Err(StrataError::new(
                                err.code,
                                format!("{what}: {}", err.message),
                            ));
                        }
                        if let (ErrorCode::NotLeader, Some(hint)) =
                            (err.code, err.leader_hint.clone())
                        {
                            *self.leader.lock().unwrap() = Some(hint.clone());
                            queue.insert(0, hint);
                        }
                        tracing::debug!(%address, error = %err, "{what}: retrying");
                        last_error = err;
                    }
                }
            }
            if started.elapsed() + backoff > self.deadline {
                return Err(StrataError::new(
                    last_error.code,
                    format!("{what}: {}", last_error.message),
                ));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    /// Asks one specific master for its own Raft view (no leader needed).
    pub async fn cluster_status_of(&self, address: &str) -> Result<pb::ClusterStatusResponse> {
        let mut client = self.grpc(address)?;
        let call = client.cluster_status(pb::ClusterStatusRequest {});
        match tokio::time::timeout(Duration::from_secs(2), call).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(status)) => Err(status.into()),
            Err(_) => Err(StrataError::new(
                ErrorCode::Timeout,
                format!("master {address} did not answer"),
            )),
        }
    }

    pub async fn list_nodes(&self) -> Result<Vec<pb::NodeInfo>> {
        let r = self
            .call("listing nodes", |mut c| async move {
                c.list_nodes(pb::ListNodesRequest {}).await
            })
            .await?;
        Ok(r.nodes)
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
            .call("listing volumes", |mut c| async move {
                c.list_volumes(pb::ListVolumesRequest {}).await
            })
            .await?;
        Ok(r.volumes)
    }

    pub async fn get_volume(&self, name: &str) -> Result<pb::Volume> {
        let request = pb::GetVolumeRequest {
            name: name.to_string(),
        };
        self.call("reading volume", |mut c| {
            let request = request.clone();
            async move { c.get_volume(request).await }
        })
        .await
    }

    pub async fn delete_volume(&self, name: &str) -> Result<()> {
        let request = pb::DeleteVolumeRequest {
            name: name.to_string(),
        };
        self.call("deleting volume", |mut c| {
            let request = request.clone();
            async move { c.delete_volume(request).await }
        })
        .await
        .map(drop)
    }

    pub async fn create_user(&self, name: &str) -> Result<pb::User> {
        let request = pb::CreateUserRequest {
            name: name.to_string(),
        };
        self.call("creating user", |mut c| {
            let request = request.clone();
            async move { c.create_user(request).await }
        })
        .await
    }

    pub async fn list_users(&self) -> Result<Vec<pb::User>> {
        let r = self
            .call("listing users", |mut c| async move {
                c.list_users(pb::ListUsersRequest {}).await
            })
            .await?;
        Ok(r.users)
    }

    pub async fn delete_user(&self, name: &str) -> Result<()> {
        let request = pb::DeleteUserRequest {
            name: name.to_string(),
        };
        self.call("deleting user", |mut c| {
            let request = request.clone();
            async move { c.delete_user(request).await }
        })
        .await
        .map(drop)
    }
}
