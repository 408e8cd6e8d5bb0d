//! Requests that take far longer than any of their steps should: logged
//! while they wait (every [`SLOW`]), so a stuck request names itself.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long a request may run before it is logged as slow (and again each time after).
pub const SLOW: Duration = Duration::from_secs(30);

/// Runs `work`, logging a warning naming it (`what`) whenever it has run
/// another [`SLOW`] without finishing. The work itself is never cut short.
pub async fn noisy_if_slow<T>(work: impl Future<Output = T>, what: impl Fn() -> String) -> T {
    let started = Instant::now();
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return out,
            () = tokio::time::sleep(SLOW) => {
                tracing::warn!(request = %what(), waited_secs = started.elapsed().as_secs(), "a request is still waiting");
            }
        }
    }
}
