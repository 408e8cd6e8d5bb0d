//! Opening the node's one RocksDB with bounded resources.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{DB, Options};
use strata_common::{Result, StrataError};

/// Opens (creating if needed) the node's RocksDB. `max_open_files` bounds file
/// descriptors: the process limit is shared with everything else the node does.
pub fn open_db(path: &Path, max_open_files: i32) -> Result<Arc<DB>> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.set_max_open_files(max_open_files);
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    opts.set_keep_log_file_num(4);
    opts.set_max_total_wal_size(256 << 20);
    opts.set_bytes_per_sync(1 << 20);
    opts.increase_parallelism(2);
    DB::open(&opts, path)
        .map(Arc::new)
        .map_err(|e| StrataError::internal(format!("opening rocksdb at {}: {e}", path.display())))
}
