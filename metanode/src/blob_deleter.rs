//! Deleting freed blobs from every member of their data partitions, for the
//! garbage collection of the partitions led here. The members come from the
//! master's view of each volume, asked for again whenever a delete fails
//! (repair may have moved them).

use std::collections::HashMap;

use futures::future::join_all;
use strata_common::{Result, StrataError};
use strata_proto::data::BlobId;
use strata_proto::master::DataPartition;
use strata_rpc::MasterClient;
use strata_rpc::channels::Channels;
use strata_rpc::datanode::delete_pieces;

pub struct BlobDeleter {
    masters: Vec<String>,
    channels: Channels,
    /// Data partitions by volume, as the master last described them.
    views: tokio::sync::Mutex<HashMap<String, Vec<DataPartition>>>,
}

impl BlobDeleter {
    pub fn new(masters: Vec<String>) -> BlobDeleter {
        BlobDeleter { masters, channels: Channels::default(), views: tokio::sync::Mutex::new(HashMap::new()) }
    }

    async fn partitions(&self, volume: &str) -> Result<Vec<DataPartition>> {
        let mut views = self.views.lock().await;
        if let Some(partitions) = views.get(volume) {
            return Ok(partitions.clone());
        }
        let view = MasterClient::new(self.masters.clone())?.get_volume(volume).await?;
        views.insert(volume.to_string(), view.data_partitions.clone());
        Ok(view.data_partitions)
    }

    /// Deletes `blobs` ((data partition, blob id) pairs) of `volume` from
    /// every member of their partitions.
    pub async fn delete(&self, volume: &str, blobs: &[(u64, u64)]) -> Result<()> {
        let deleted = self.try_delete(volume, blobs).await;
        if deleted.is_err() {
            // Members may have moved: ask the master again next time.
            self.views.lock().await.remove(volume);
        }
        deleted
    }

    async fn try_delete(&self, volume: &str, blobs: &[(u64, u64)]) -> Result<()> {
        let partitions = self.partitions(volume).await?;
        let mut by_partition: HashMap<u64, Vec<BlobId>> = HashMap::new();
        for &(partition_id, blob_id) in blobs {
            by_partition.entry(partition_id).or_default().push(BlobId { partition_id, blob_id });
        }
        for (partition_id, ids) in by_partition {
            let partition = partitions.iter().find(|p| p.id == partition_id).ok_or_else(|| {
                StrataError::not_found(format!("data partition {partition_id} is not in volume {volume}"))
            })?;
            let deletes = partition.members.iter().map(|m| delete_pieces(&self.channels, &m.address, ids.clone()));
            for result in join_all(deletes).await {
                result?;
            }
        }
        Ok(())
    }
}
