//! Logging setup shared by every process: tracing to standard output, as text or as
//! one JSON object per line (`--log-format json`, for log shippers), with
//! per-module levels from `--log-level` or `RUST_LOG` (directives such as
//! `info,strata_raftstore=debug,s3_access=warn`; default `info`).

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    /// One JSON object per event: timestamp, level, target, fields.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("log format {other:?}: text or json")),
        }
    }
}

/// Installs the process's logger: `levels` (if given) over `RUST_LOG` over
/// `default_filter`. A malformed `levels` falls back to the default with a
/// warning rather than silencing the process.
pub fn init_with(default_filter: &str, levels: Option<&str>, format: LogFormat) {
    let (filter, bad) = match levels.map(EnvFilter::try_new) {
        Some(Ok(filter)) => (filter, None),
        Some(Err(e)) => (EnvFilter::new(default_filter), Some(e.to_string())),
        None => (EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)), None),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
    };
    if let Some(error) = bad {
        tracing::warn!(%error, "ignoring --log-level; logging at the default levels");
    }
}

/// Text logs at `RUST_LOG` or `default_filter`.
pub fn init(default_filter: &str) {
    init_with(default_filter, None, LogFormat::Text);
}
