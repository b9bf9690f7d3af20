//! One provider client per EmailSenderConfig, reused across Emails (SMTP keeps a connection
//! pool inside it), and rebuilt when the config's spec or its Secret changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::api::EmailSenderConfigSpec;
use crate::provider::{ConfigError, Loaded, Provider, build_provider};

/// Sender key (`namespace/name`) -> (fingerprint of spec and Secret version, client).
type Entries = HashMap<String, (String, Arc<dyn Provider>)>;

pub struct ProviderCache {
    http: reqwest::Client,
    entries: Mutex<Entries>,
}

impl ProviderCache {
    pub fn new(http: reqwest::Client) -> Self {
        Self {
            http,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The client for the sender `key` (`namespace/name`), built anew when the spec or the
    /// Secret's resourceVersion differs from the cached one.
    pub fn get(
        &self,
        key: &str,
        spec: &EmailSenderConfigSpec,
        loaded: Loaded,
    ) -> Result<Arc<dyn Provider>, ConfigError> {
        let fingerprint = fingerprint(spec, loaded.secret_version.as_deref());
        if let Some((fp, provider)) = self.lock().get(key)
            && *fp == fingerprint
        {
            return Ok(provider.clone());
        }
        let provider = build_provider(spec, loaded.credentials, &self.http)?;
        self.lock()
            .insert(key.to_string(), (fingerprint, provider.clone()));
        Ok(provider)
    }

    /// Drops the client of a deleted sender.
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts),
        // so a poisoned lock is still usable.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn fingerprint(spec: &EmailSenderConfigSpec, secret_version: Option<&str>) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(spec).unwrap_or_default());
    h.update([0]);
    h.update(secret_version.unwrap_or_default().as_bytes());
    hex::encode(h.finalize())
}
