//! Who may use the console: keys of the `admin` user. A browser logs in once
//! (a form with the key id and secret, or a signed link that `strata console
//! url` prints, valid for minutes and naming no secret) and gets a session
//! cookie, kept in this master's memory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use strata_common::{ErrorCode, StrataError};
use strata_rpc::MasterClient;

/// The user whose access keys administer the cluster (until per-key roles exist).
pub const ADMIN_USER: &str = "admin";
/// The session cookie's name.
pub const COOKIE: &str = "strata_console";
/// How long a session lasts.
const SESSION: Duration = Duration::from_secs(12 * 3600);
/// The longest a signed login link may be valid for.
pub const MAX_LINK_LIFETIME: Duration = Duration::from_secs(3600);

/// The signature of a login link for `key_id` valid until `expires` (Unix
/// seconds): hex HMAC-SHA256 under the key's secret.
pub fn login_signature(secret: &str, key_id: &str, expires: u64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(format!("strata-console\n{key_id}\n{expires}").as_bytes());
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Equal in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Sessions of logged-in browsers.
#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Instant>>,
}

impl Sessions {
    fn open(&self) -> String {
        let token: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
        let mut live = self.live.lock().unwrap();
        let now = Instant::now();
        live.retain(|_, until| *until > now);
        live.insert(token.clone(), now + SESSION);
        token
    }

    /// Whether the request's `Cookie` header holds a live session.
    pub fn admits(&self, cookie_header: Option<&str>) -> bool {
        let Some(header) = cookie_header else { return false };
        let live = self.live.lock().unwrap();
        header
            .split(';')
            .filter_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
            .any(|token| live.get(token).is_some_and(|until| *until > Instant::now()))
    }

    /// A session for the holder of `key_id`'s secret, if the key is an admin's.
    pub async fn login_with_secret(
        &self,
        masters: &MasterClient,
        key_id: &str,
        secret: &str,
    ) -> Result<String, Refusal> {
        let key = admin_key(masters, key_id).await?;
        if !same(key.secret_access_key.as_bytes(), secret.as_bytes()) {
            return Err(Refusal::BadCredentials);
        }
        Ok(self.open())
    }

    /// A session for a signed login link.
    pub async fn login_with_link(
        &self,
        masters: &MasterClient,
        key_id: &str,
        expires: u64,
        signature: &str,
    ) -> Result<String, Refusal> {
        let now = now_secs();
        if expires < now || expires > now + MAX_LINK_LIFETIME.as_secs() {
            return Err(Refusal::Expired);
        }
        let key = admin_key(masters, key_id).await?;
        let expected = login_signature(&key.secret_access_key, key_id, expires);
        if !same(expected.as_bytes(), signature.as_bytes()) {
            return Err(Refusal::BadCredentials);
        }
        Ok(self.open())
    }
}

/// Why a login was refused.
#[derive(Debug)]
pub enum Refusal {
    /// Unknown key, wrong secret or signature, or not an admin's key (one
    /// answer for all, so the console tells nobody which keys exist).
    BadCredentials,
    Expired,
    /// The masters could not be asked.
    Unavailable(StrataError),
}

async fn admin_key(masters: &MasterClient, key_id: &str) -> Result<strata_proto::master::AccessKey, Refusal> {
    let key = match masters.get_access_key(key_id).await {
        Ok(key) => key,
        Err(e) if e.code == ErrorCode::NotFound => return Err(Refusal::BadCredentials),
        Err(e) => return Err(Refusal::Unavailable(e)),
    };
    if key.user != ADMIN_USER {
        return Err(Refusal::BadCredentials);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_depend_on_secret_key_and_expiry() {
        let base = login_signature("secret", "AKID", 100);
        assert_eq!(base.len(), 64);
        assert_eq!(base, login_signature("secret", "AKID", 100));
        assert_ne!(base, login_signature("secret2", "AKID", 100));
        assert_ne!(base, login_signature("secret", "AKID2", 100));
        assert_ne!(base, login_signature("secret", "AKID", 101));
    }

    #[test]
    fn sessions_are_found_in_any_cookie_position() {
        let sessions = Sessions::default();
        let token = sessions.open();
        assert!(sessions.admits(Some(&format!("a=b; {COOKIE}={token}"))));
        assert!(!sessions.admits(Some(&format!("{COOKIE}=x{token}"))));
        assert!(!sessions.admits(Some("a=b")));
        assert!(!sessions.admits(None));
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"ab", b"abc"));
    }
}
