//! The CSI Identity service: who the plugin is, what it serves, and
//! whether it is ready (the master answers).

use strata_proto::csi::{self as pb, identity_server::Identity, plugin_capability};
use strata_sdk::MasterClient;
use tonic::{Request, Response, Status};

/// The driver's name, as StorageClasses and the CSIDriver object name it.
pub const DRIVER_NAME: &str = "csi.strata.io";

pub struct IdentityService {
    pub master: MasterClient,
    /// Whether this plugin serves the Controller service.
    pub controller: bool,
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _request: Request<pb::GetPluginInfoRequest>,
    ) -> Result<Response<pb::GetPluginInfoResponse>, Status> {
        Ok(Response::new(pb::GetPluginInfoResponse {
            name: DRIVER_NAME.to_string(),
            vendor_version: env!("CARGO_PKG_VERSION").to_string(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _request: Request<pb::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<pb::GetPluginCapabilitiesResponse>, Status> {
        use plugin_capability::{Service, Type, VolumeExpansion, service, volume_expansion};
        let mut capabilities = vec![pb::PluginCapability {
            r#type: Some(Type::VolumeExpansion(VolumeExpansion { r#type: volume_expansion::Type::Online as i32 })),
        }];
        if self.controller {
            capabilities.push(pb::PluginCapability {
                r#type: Some(Type::Service(Service { r#type: service::Type::ControllerService as i32 })),
            });
        }
        Ok(Response::new(pb::GetPluginCapabilitiesResponse { capabilities }))
    }

    async fn probe(&self, _request: Request<pb::ProbeRequest>) -> Result<Response<pb::ProbeResponse>, Status> {
        // Ready once the master answers; an unreachable master is not the plugin's fault.
        let ready = self.master.list_volumes().await.is_ok();
        Ok(Response::new(pb::ProbeResponse { ready: Some(ready) }))
    }
}
