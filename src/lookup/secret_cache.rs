//! Secrets as the operator holds them: the metadata of every Secret (from a metadata-only
//! watch, to notice changes), and the data of only those Secrets something referenced, read
//! on demand and kept within a byte budget.
//!
//! The operator may read Secrets cluster-wide, and a cluster holds many it never uses (Helm
//! keeps each release in a Secret of up to 1 MB). Caching all of them with their data made
//! the operator's memory a function of everyone else's Secrets; now it is a function of the
//! Secrets that senders and attachments name.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};

/// A Secret's data, as read at one resourceVersion.
pub type SecretData = BTreeMap<String, ByteString>;

/// Bytes of Secret data kept between reads. Referenced Secrets are small (tokens, a few
/// attachments); past the budget the least recently used are dropped and read again when
/// next needed.
pub const DATA_BUDGET_BYTES: usize = 32 * 1024 * 1024;

pub struct SecretCache {
    client: Client,
    /// Every Secret's metadata (labels kept, annotations and managed fields dropped).
    meta: Store<PartialObjectMeta<Secret>>,
    data: Mutex<DataCache>,
    budget: usize,
    /// Shows [`SecretCache::data_bytes`] as a metric.
    gauge: Option<prometheus_client::metrics::gauge::Gauge>,
}

#[derive(Default)]
struct DataCache {
    entries: HashMap<(String, String), Entry>,
    bytes: usize,
    clock: u64,
}

struct Entry {
    version: String,
    data: Arc<SecretData>,
    bytes: usize,
    used: u64,
}

/// A Secret as a lookup sees it: whether it may be attached, and its data.
#[derive(Clone, Debug)]
pub struct SecretView {
    pub attachable: bool,
    pub version: Option<String>,
    pub data: Arc<SecretData>,
}

/// `kmailops.io/attachable: "true"` on a Secret: its keys may be attached to Emails.
pub const ATTACHABLE_LABEL: &str = "kmailops.io/attachable";

pub fn is_attachable(labels: Option<&BTreeMap<String, String>>) -> bool {
    labels
        .and_then(|l| l.get(ATTACHABLE_LABEL))
        .is_some_and(|v| v == "true")
}

fn size(data: &SecretData) -> usize {
    data.iter().map(|(k, v)| k.len() + v.0.len()).sum()
}

impl SecretCache {
    pub fn new(
        client: Client,
        meta: Store<PartialObjectMeta<Secret>>,
        gauge: prometheus_client::metrics::gauge::Gauge,
    ) -> Self {
        SecretCache {
            client,
            meta,
            data: Mutex::default(),
            budget: DATA_BUDGET_BYTES,
            gauge: Some(gauge),
        }
    }

    /// Reports the bytes held after a change.
    fn report(&self, bytes: usize) {
        if let Some(g) = &self.gauge {
            g.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }

    /// The metadata store (for readiness and for telling which Secrets exist).
    pub fn meta(&self) -> &Store<PartialObjectMeta<Secret>> {
        &self.meta
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DataCache> {
        // Only whole-entry inserts and removals happen under the lock.
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The Secret `namespace/name`, or `None` when it does not exist. The data comes from
    /// the cache when the watch shows the version read before, else from the API server.
    pub async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<SecretView>, kube::Error> {
        let Some(meta) = self.meta.get(&ObjectRef::new(name).within(namespace)) else {
            return Ok(None);
        };
        let attachable = is_attachable(meta.metadata.labels.as_ref());
        let version = meta.metadata.resource_version.clone();
        let key = (namespace.to_string(), name.to_string());
        {
            let mut cache = self.lock();
            cache.clock += 1;
            let clock = cache.clock;
            if let Some(entry) = cache.entries.get_mut(&key)
                && Some(&entry.version) == version.as_ref()
            {
                entry.used = clock;
                return Ok(Some(SecretView {
                    attachable,
                    version,
                    data: entry.data.clone(),
                }));
            }
        }
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let Some(secret) = api.get_opt(name).await? else {
            self.forget(namespace, name);
            return Ok(None);
        };
        let data = Arc::new(secret.data.unwrap_or_default());
        let read_version = secret.metadata.resource_version.unwrap_or_default();
        self.keep(key, read_version.clone(), data.clone());
        Ok(Some(SecretView {
            attachable: is_attachable(secret.metadata.labels.as_ref()),
            version: Some(read_version),
            data,
        }))
    }

    fn keep(&self, key: (String, String), version: String, data: Arc<SecretData>) {
        let bytes = size(&data);
        if bytes > self.budget {
            return;
        }
        let mut cache = self.lock();
        cache.clock += 1;
        let used = cache.clock;
        if let Some(old) = cache.entries.remove(&key) {
            cache.bytes -= old.bytes;
        }
        while cache.bytes + bytes > self.budget {
            let Some(oldest) = cache
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = cache.entries.remove(&oldest) {
                cache.bytes -= e.bytes;
            }
        }
        cache.bytes += bytes;
        self.report(cache.bytes);
        cache.entries.insert(
            key,
            Entry {
                version,
                data,
                bytes,
                used,
            },
        );
    }

    /// Drops the data kept of `namespace/name` (it changed or went away).
    pub fn forget(&self, namespace: &str, name: &str) {
        let mut cache = self.lock();
        if let Some(e) = cache
            .entries
            .remove(&(namespace.to_string(), name.to_string()))
        {
            cache.bytes -= e.bytes;
            self.report(cache.bytes);
        }
    }

    /// Bytes of Secret data held now.
    pub fn data_bytes(&self) -> usize {
        self.lock().bytes
    }
}
