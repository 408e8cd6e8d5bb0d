//! raft-rs logs through slog; this drain forwards its records to tracing so a
//! process has one log stream. raft-rs's info level is chatty (every vote), so
//! it becomes debug here; the engine logs leadership changes itself.

use std::fmt::{self, Write as _};

use slog::{Drain, Key, Level, OwnedKVList, Record, Serializer};

struct TracingDrain;

struct KvCollector(String);

impl Serializer for KvCollector {
    fn emit_arguments(&mut self, key: Key, val: &fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        let mut kv = KvCollector(String::new());
        let _ = slog::KV::serialize(values, record, &mut kv);
        let _ = slog::KV::serialize(&record.kv(), record, &mut kv);
        let msg = record.msg();
        match record.level() {
            Level::Critical | Level::Error => tracing::error!("raft: {msg}{}", kv.0),
            Level::Warning => tracing::warn!("raft: {msg}{}", kv.0),
            Level::Info => tracing::debug!("raft: {msg}{}", kv.0),
            Level::Debug | Level::Trace => tracing::trace!("raft: {msg}{}", kv.0),
        }
        Ok(())
    }
}

pub fn group_logger(node_id: u64, group: u64) -> slog::Logger {
    slog::Logger::root(TracingDrain.fuse(), slog::o!("node_id" => node_id, "group_id" => group))
}
