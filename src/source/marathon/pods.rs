//! The pod half of the Marathon source: reads `/v2/pods` and
//! `/v2/pods/::status` at every snapshot, re-reads one pod's status
//! (`/v2/pods/{id}::status`) when an event says it changed, and keeps the pod
//! versions that launched live instances (`/v2/pods/{id}::versions/{v}`).
//!
//! A Marathon without pods (before 1.4) answers 404 on `/v2/pods`: that is
//! "no pods", logged once at info, and the apps work as before.

use std::collections::{HashMap, HashSet};

use super::{Failure, JSON};
use crate::config::GroupsConfig;
use crate::model::Task;
use crate::source::http::MasterClient;
use crate::source::wire::marathon::pods::{
    convert_pod, parse_pod_status, parse_pod_statuses, parse_pods, pod_status_path,
    pod_version_path, Pod, PodConfig, PodStatus,
};

/// Pod definitions.
pub const PODS_PATH: &str = "/v2/pods";
/// Every pod's instances.
pub const PODS_STATUS_PATH: &str = "/v2/pods/::status";

/// What the source knows about pods between snapshots.
#[derive(Debug, Default)]
pub(super) struct Pods {
    /// Current definitions by pod id.
    defs: HashMap<String, Pod>,
    /// Configurations of older versions that launched live instances.
    versions: HashMap<(String, String), PodConfig>,
    /// Versions the master no longer has (404).
    missing: HashSet<(String, String)>,
    /// The master said 404 on `/v2/pods` (logged once).
    unsupported_logged: bool,
}

impl Pods {
    /// Is `id` a pod (rather than an app)?
    pub fn is_pod(&self, id: &str) -> bool {
        self.defs.contains_key(id)
    }

    /// Every pod instance of the cluster, for a snapshot. Replaces the known
    /// definitions only once the whole answer was read.
    pub async fn fetch_all(
        &mut self,
        client: &MasterClient,
        groups: &GroupsConfig,
    ) -> Result<Vec<Task>, Failure> {
        let Some(body) = self.get_or_absent(client, PODS_PATH).await? else {
            self.defs.clear();
            return Ok(Vec::new());
        };
        let pods = parse_pods(&body.bytes).map_err(|detail| garbage(client, &body.url, detail))?;
        let Some(body) = self.get_or_absent(client, PODS_STATUS_PATH).await? else {
            self.defs.clear();
            return Ok(Vec::new());
        };
        let statuses =
            parse_pod_statuses(&body.bytes).map_err(|detail| garbage(client, &body.url, detail))?;
        let defs: HashMap<String, Pod> = pods.into_iter().map(|p| (p.id.clone(), p)).collect();
        self.defs = defs;
        // A pod created between the two requests: its status carries its spec.
        for status in &statuses {
            if let Some(spec) = &status.spec {
                self.defs
                    .entry(status.id.clone())
                    .or_insert_with(|| spec.clone());
            }
        }
        let mut tasks = Vec::new();
        for status in &statuses {
            tasks.extend(self.convert(client, status, groups).await?);
        }
        let live: HashSet<&String> = self.defs.keys().collect();
        self.versions.retain(|(pod, _), _| live.contains(pod));
        self.missing.retain(|(pod, _)| live.contains(pod));
        Ok(tasks)
    }

    /// One pod's instances after an event about it; `None` when the pod is
    /// gone (404), and it is forgotten.
    pub async fn fetch_one(
        &mut self,
        client: &MasterClient,
        groups: &GroupsConfig,
        pod_id: &str,
    ) -> Result<Option<Vec<Task>>, Failure> {
        let body = match client.get(&pod_status_path(pod_id), JSON).await {
            Ok(body) => body,
            Err(e) if e.status() == Some(404) => {
                self.forget(pod_id);
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let status = parse_pod_status(&body.bytes).map_err(|detail| Failure::Garbage {
            url: body.url.clone(),
            detail,
        })?;
        if let Some(spec) = &status.spec {
            self.defs.insert(pod_id.to_string(), spec.clone());
        }
        let mut status = status;
        // Key the tasks exactly as the events name the pod.
        status.id = pod_id.to_string();
        Ok(Some(self.convert(client, &status, groups).await?))
    }

    fn forget(&mut self, pod_id: &str) {
        self.defs.remove(pod_id);
        self.versions.retain(|(pod, _), _| pod != pod_id);
        self.missing.retain(|(pod, _)| pod != pod_id);
    }

    /// The instances of one status, fetching the launching versions that
    /// are not known yet.
    async fn convert(
        &mut self,
        client: &MasterClient,
        status: &PodStatus,
        groups: &GroupsConfig,
    ) -> Result<Vec<Task>, Failure> {
        let Some(spec) = self.defs.get(&status.id).or(status.spec.as_ref()).cloned() else {
            tracing::warn!(pod = %status.id, "marathon source: pod status without a definition; its instances are treated as ungrouped");
            return Ok(ungrouped(status, groups));
        };
        let current_version = spec.version.as_deref().map(str::trim);
        let wanted: HashSet<String> = status
            .instances
            .iter()
            .filter_map(|i| i.launch_version())
            .filter(|v| Some(*v) != current_version)
            .map(str::to_string)
            .collect();
        for version in wanted {
            let key = (status.id.clone(), version.clone());
            if self.versions.contains_key(&key) || self.missing.contains(&key) {
                continue;
            }
            match self.fetch_version(client, &status.id, &version).await? {
                Some(config) => {
                    self.versions.insert(key, config);
                }
                None => {
                    tracing::info!(pod = %status.id, version = %version, "marathon source: launching pod version no longer on the master; its instances are treated as ungrouped");
                    self.missing.insert(key);
                }
            }
        }
        let current = spec.config();
        let versions = &self.versions;
        Ok(convert_pod(
            &status.id,
            &status.instances,
            current_version,
            &current,
            |v| versions.get(&(status.id.clone(), v.to_string())),
            groups,
        ))
    }

    async fn fetch_version(
        &self,
        client: &MasterClient,
        pod_id: &str,
        version: &str,
    ) -> Result<Option<PodConfig>, Failure> {
        let body = match client.get(&pod_version_path(pod_id, version), JSON).await {
            Ok(body) => body,
            Err(e) if e.status() == Some(404) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let pod: Pod = serde_json::from_slice(&body.bytes).map_err(|e| Failure::Garbage {
            url: body.url.clone(),
            detail: format!("not a pod definition: {e}"),
        })?;
        Ok(Some(pod.config()))
    }

    /// `GET path`, or `None` when the master has no pods API (404).
    async fn get_or_absent(
        &mut self,
        client: &MasterClient,
        path: &str,
    ) -> Result<Option<crate::source::http::Body>, Failure> {
        match client.get(path, JSON).await {
            Ok(body) => Ok(Some(body)),
            Err(e) if e.status() == Some(404) => {
                if !self.unsupported_logged {
                    tracing::info!("marathon source: {path} answers 404: this Marathon has no pods (before 1.4); reading apps only");
                    self.unsupported_logged = true;
                }
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Well-formed HTTP, useless answer: prefer another master next time.
fn garbage(client: &MasterClient, url: &str, detail: String) -> Failure {
    client.demote();
    Failure::Garbage {
        url: url.to_string(),
        detail,
    }
}

/// Instances of a pod whose definition is unknown: addresses, no groups
/// (fail closed), as container-network endpoints.
fn ungrouped(status: &PodStatus, groups: &GroupsConfig) -> Vec<Task> {
    let config = PodConfig {
        network: crate::source::wire::NetworkKind::PerTask,
        network_labels: Vec::new(),
        pod_labels: Default::default(),
        discovery_ports: Default::default(),
    };
    convert_pod(
        &status.id,
        &status.instances,
        None,
        &config,
        |_| None,
        groups,
    )
}
