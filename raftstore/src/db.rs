//! Opening the node's one RocksDB with bounded resources: open files, block
//! cache (index and filter blocks included) and memtables are all capped by
//! configuration, so memory does not grow with the amount of data.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{BlockBasedIndexType, BlockBasedOptions, Cache, DB, Options};
use strata_common::config::RaftConfig;
use strata_common::{Result, StrataError};

/// Opens (creating if needed) the node's RocksDB with the limits in `config`.
pub fn open_db(path: &Path, config: &RaftConfig) -> Result<Arc<DB>> {
    let mut table = BlockBasedOptions::default();
    let cache = Cache::new_lru_cache((config.rocksdb_block_cache_mb << 20) as usize);
    table.set_block_cache(&cache);
    table.set_cache_index_and_filter_blocks(true);
    table.set_cache_index_and_filter_blocks_with_high_priority(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    table.set_bloom_filter(10.0, false);
    // Partitioned index and filters: a lookup loads one small partition, not
    // the whole filter of a large file (which thrashes a bounded cache and
    // costs a checksum over megabytes per miss).
    table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
    table.set_partition_filters(true);
    table.set_metadata_block_size(4096);
    table.set_pin_top_level_index_and_filter(true);

    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.set_block_based_table_factory(&table);
    opts.set_max_open_files(config.rocksdb_max_open_files);
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    opts.set_write_buffer_size((config.rocksdb_write_buffer_mb << 20) as usize);
    opts.set_max_write_buffer_number(2);
    opts.set_db_write_buffer_size(((2 * config.rocksdb_write_buffer_mb) << 20) as usize);
    opts.set_keep_log_file_num(4);
    opts.set_max_total_wal_size(256 << 20);
    opts.set_bytes_per_sync(1 << 20);
    opts.increase_parallelism(2);
    DB::open(&opts, path)
        .map(Arc::new)
        .map_err(|e| StrataError::internal(format!("opening rocksdb at {}: {e}", path.display())))
}
