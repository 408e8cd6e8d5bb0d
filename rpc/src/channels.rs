//! Calling a Raft-replicated service: keep a channel per address, try the
//! known leader first, follow the leader hints followers give, rotate through
//! the members on failures that are safe to retry, back off, and give up at a
//! deadline. Used for the masters and for every meta partition.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use strata_common::{ErrorCode, Result, StrataError};
use tonic::transport::{Channel, Endpoint};

/// HTTP/2 flow-control window per stream, both directions.
pub const WINDOW: u32 = 16 << 20;

/// How a node of the cluster is reached. A node that stops answering (hung,
/// or cut off by the network: its TCP connection stays open but silent) is
/// noticed by HTTP/2 pings within seconds, failing its calls as unavailable
/// so they are retried elsewhere, instead of each waiting out its timeout;
/// a slow call to a live node is not cut short.
pub fn endpoint(address: &str) -> Result<Endpoint> {
    Ok(Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| StrataError::invalid(format!("address {address:?}: {e}")))?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(2))
        // HTTP/2's default 64 KiB windows stall multi-MiB blob transfers.
        .initial_stream_window_size(WINDOW)
        .initial_connection_window_size(WINDOW * 4))
}

/// Lazily connected channels, one per address, shared by all callers.
#[derive(Default)]
pub struct Channels(Mutex<HashMap<String, Channel>>);

impl Channels {
    pub fn get(&self, address: &str) -> Result<Channel> {
        let mut channels = self.0.lock().unwrap();
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let channel = endpoint(address)?.timeout(Duration::from_secs(15)).connect_lazy();
        channels.insert(address.to_string(), channel.clone());
        Ok(channel)
    }
}

/// The members of one Raft group and the one believed to lead it.
pub struct LeaderRouter {
    members: Vec<String>,
    leader: Mutex<Option<String>>,
}

impl LeaderRouter {
    pub fn new(members: Vec<String>) -> Self {
        LeaderRouter { members, leader: Mutex::new(None) }
    }

    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// The member that answered last, if any.
    pub fn leader(&self) -> Option<String> {
        self.leader.lock().unwrap().clone()
    }

    /// The order in which to try members: the known leader first.
    fn candidates(&self) -> Vec<String> {
        let mut order = Vec::with_capacity(self.members.len() + 1);
        if let Some(leader) = self.leader.lock().unwrap().clone() {
            order.push(leader);
        }
        for m in &self.members {
            if !order.contains(m) {
                order.push(m.clone());
            }
        }
        order
    }

    /// Runs `call` against the leader until it succeeds, fails in a way that
    /// retrying cannot fix, or `deadline` passes. `what` says what was being done.
    pub async fn call<T, F, Fut>(&self, channels: &Channels, deadline: Duration, what: &str, mut call: F) -> Result<T>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(50);
        let mut last_error = StrataError::unavailable("no member was tried");
        loop {
            let mut queue = self.candidates();
            let mut tried = Vec::new();
            while !queue.is_empty() {
                let address = queue.remove(0);
                if tried.contains(&address) {
                    continue;
                }
                tried.push(address.clone());
                match call(channels.get(&address)?).await {
                    Ok(response) => {
                        *self.leader.lock().unwrap() = Some(address);
                        return Ok(response.into_inner());
                    }
                    Err(status) => {
                        let err = StrataError::from(status);
                        if !err.is_retryable() {
                            return Err(StrataError { message: format!("{what}: {}", err.message), ..err });
                        }
                        if let (ErrorCode::NotLeader, Some(hint)) = (err.code, err.leader_hint.clone()) {
                            *self.leader.lock().unwrap() = Some(hint.clone());
                            queue.insert(0, hint);
                        }
                        tracing::debug!(%address, error = %err, "{what}: retrying");
                        last_error = err;
                    }
                }
            }
            if started.elapsed() + backoff > deadline {
                return Err(StrataError::new(last_error.code, format!("{what}: {}", last_error.message)));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }
}
