//! The `admin` user of a `strata dev` cluster: its key pair goes into
//! cluster.json (`admin`), and the console's address and a login link are
//! printed, so the web console opens right away.

use std::path::Path;

use serde::{Deserialize, Serialize};
use strata_master::console::ADMIN_USER;
use strata_sdk::MasterClient;

use crate::cluster_file::ClusterFile;

/// The admin user's key as cluster.json records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AdminKey {
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// Makes (or finds again) the admin user's key, records it in `file`, and
/// prints where the console is.
pub async fn ensure(dir: &Path, file: &mut ClusterFile) -> anyhow::Result<()> {
    let client = MasterClient::new(file.master_addresses())?;
    let recorded = file.admin.as_ref().map(|a| a.access_key_id.as_str());
    let (access_key_id, secret_access_key) = crate::dev_s3::user_key(&client, ADMIN_USER, recorded).await?;
    let key = AdminKey { access_key_id, secret_access_key };
    if let Some(console) = file.nodes.iter().find(|n| n.role == "master").and_then(|n| n.console.as_deref()) {
        let link = crate::console_cmd::login_link(console, &key.access_key_id, &key.secret_access_key);
        println!("console: http://{console}/  (log in: {link}, or `strata console url`)");
    }
    file.admin = Some(key);
    file.store(dir)
}
