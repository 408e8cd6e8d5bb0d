//! The access key a StorageClass's secrets carry (the CSI `secrets` fields,
//! filled by the sidecars and kubelet from
//! `csi.storage.k8s.io/{provisioner,node-stage,controller-expand}-secret-*`).
//! With one, a PVC is made, staged, grown and deleted on behalf of the key's
//! user: the key must be known to the master with that secret, and the
//! volume must be the user's or granted to the key (the same rights as S3
//! buckets: read, write, owner). A `volume` PVC made with a key is owned by
//! its user. Without secrets the driver acts for the cluster (Strata's nodes
//! do not authenticate clients yet). A secret is never logged: its `Debug`
//! is redacted and errors name the key id only.

use std::collections::HashMap;
use std::fmt;

use strata_common::ErrorCode;
use strata_common::types::AccessLevel;
use strata_proto::master as master_pb;
use strata_sdk::MasterClient;
use tonic::Status;

/// The secrets' key holding the access key id.
pub const ACCESS_KEY_ID: &str = "accessKeyID";
/// The secrets' key holding the secret access key.
pub const SECRET_ACCESS_KEY: &str = "secretAccessKey";

/// An access key and its secret, from a request's secrets.
pub struct Credentials {
    pub access_key_id: String,
    secret: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("access_key_id", &self.access_key_id).field("secret", &"…").finish()
    }
}

impl Credentials {
    /// The credentials in `secrets`, if any; one half without the other is refused.
    pub fn from_secrets(secrets: &HashMap<String, String>) -> Result<Option<Credentials>, Status> {
        match (secrets.get(ACCESS_KEY_ID), secrets.get(SECRET_ACCESS_KEY)) {
            (None, None) => Ok(None),
            (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
                Ok(Some(Credentials { access_key_id: id.clone(), secret: secret.clone() }))
            }
            _ => Err(Status::invalid_argument(format!(
                "secrets need both {ACCESS_KEY_ID} and {SECRET_ACCESS_KEY}, neither empty"
            ))),
        }
    }

    /// The user holding this key, once the master confirms the secret.
    pub async fn user(&self, master: &MasterClient) -> Result<String, Status> {
        let key = match master.get_access_key(&self.access_key_id).await {
            Ok(key) => key,
            Err(e) if e.code == ErrorCode::NotFound => {
                return Err(Status::unauthenticated(format!("access key {} is not known", self.access_key_id)));
            }
            Err(e) => return Err(crate::status::from_strata(e, "looking up the access key")),
        };
        if !same_secret(key.secret_access_key.as_bytes(), self.secret.as_bytes()) {
            return Err(Status::unauthenticated(format!("wrong secret for access key {}", self.access_key_id)));
        }
        Ok(key.user)
    }
}

/// Compares two secrets in time that does not depend on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// What the key `access_key_id` of `user` may do on `volume`: everything
/// when the volume has no owner or is the user's, else what it was granted.
pub fn access_on(volume: &master_pb::Volume, user: &str, access_key_id: &str) -> Option<AccessLevel> {
    let grant = volume.grants.iter().find(|g| g.access_key_id == access_key_id);
    let granted = grant.and_then(|g| AccessLevel::from_wire(g.level).ok().flatten());
    AccessLevel::on_volume(&volume.owner, user, granted)
}

/// Refuses (PERMISSION_DENIED, or UNAUTHENTICATED for a bad key) unless
/// `credentials`, if given, allow `need` on `volume`.
pub async fn authorize(
    master: &MasterClient,
    credentials: Option<&Credentials>,
    volume: &master_pb::Volume,
    need: AccessLevel,
) -> Result<(), Status> {
    let Some(credentials) = credentials else { return Ok(()) };
    let user = credentials.user(master).await?;
    match access_on(volume, &user, &credentials.access_key_id) {
        Some(level) if level >= need => Ok(()),
        _ => Err(Status::permission_denied(format!(
            "access key {} may not {} volume {}",
            credentials.access_key_id,
            match need {
                AccessLevel::Read => "read",
                AccessLevel::Write => "write to",
                AccessLevel::Owner => "administer",
            },
            volume.name
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_whole_and_never_show_their_secret() {
        let mut secrets = HashMap::new();
        assert!(Credentials::from_secrets(&secrets).unwrap().is_none());
        secrets.insert(ACCESS_KEY_ID.to_string(), "AKID".to_string());
        assert_eq!(Credentials::from_secrets(&secrets).unwrap_err().code(), tonic::Code::InvalidArgument);
        secrets.insert(SECRET_ACCESS_KEY.to_string(), "hunter2".to_string());
        let credentials = Credentials::from_secrets(&secrets).unwrap().unwrap();
        let shown = format!("{credentials:?}");
        assert!(shown.contains("AKID") && !shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn rights_follow_the_owner_and_the_grants() {
        let grant = |key: &str, level| master_pb::BucketGrant { access_key_id: key.into(), level: level as i32 };
        let volume = master_pb::Volume {
            name: "v".into(),
            owner: "alice".into(),
            grants: vec![grant("READER", master_pb::GrantLevel::GrantRead)],
            ..Default::default()
        };
        assert_eq!(access_on(&volume, "alice", "ANY"), Some(AccessLevel::Owner));
        assert_eq!(access_on(&volume, "bob", "READER"), Some(AccessLevel::Read));
        assert_eq!(access_on(&volume, "bob", "OTHER"), None);
        let unowned = master_pb::Volume { owner: String::new(), ..volume };
        assert_eq!(access_on(&unowned, "bob", "OTHER"), Some(AccessLevel::Owner));
        assert!(same_secret(b"abc", b"abc") && !same_secret(b"abc", b"abd") && !same_secret(b"abc", b"ab"));
    }
}
