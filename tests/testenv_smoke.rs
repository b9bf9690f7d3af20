//! Proves the integration-test harness (`tests/support`) against the real API server.
//!
//! On the testenv server these go through the Secret/ConfigMap shim
//! (`support::core_standin`) and the Lease stand-in CRD; on a full cluster, through the real
//! API.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{
    Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::watcher;
use serde_json::Value;

use support::core_standin::{from_standin, standin_uri, to_standin};
use support::{TestEnv, wait_for};

const TIMEOUT: Duration = Duration::from_secs(20);

fn secret(name: &str, key: &str, value: &[u8]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(key.into(), ByteString(value.to_vec()))])),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn secret_created_through_api_secret_reads_back_with_its_data() {
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("smoke-secret").await;
    let secrets: Api<Secret> = Api::namespaced(env.client(), &ns);

    secrets
        .create(
            &PostParams::default(),
            &secret("creds", "apiKey", b"s3cr3t\n"),
        )
        .await
        .expect("create Secret");

    let read = secrets.get("creds").await.expect("get Secret");
    let data = read.data.expect("Secret has data");
    assert_eq!(data["apiKey"].0, b"s3cr3t\n");
    assert_eq!(read.metadata.namespace.as_deref(), Some(ns.as_str()));

    let listed = secrets
        .list(&Default::default())
        .await
        .expect("list Secrets");
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].metadata.name.as_deref(), Some("creds"));
}

#[tokio::test]
async fn watch_on_secrets_sees_a_created_secret() {
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("smoke-watch").await;
    let secrets: Api<Secret> = Api::namespaced(env.client(), &ns);

    // Start the watch first, from "now", so the ADDED event must come through the stream.
    let list = secrets
        .list(&Default::default())
        .await
        .expect("list Secrets");
    let version = list.metadata.resource_version.expect("a resourceVersion");
    let mut events = secrets
        .watch(&WatchParams::default().timeout(30), &version)
        .await
        .expect("watch Secrets")
        .boxed();

    secrets
        .create(&PostParams::default(), &secret("watched", "k", b"v"))
        .await
        .expect("create Secret");

    let added = tokio::time::timeout(TIMEOUT, async {
        while let Some(event) = events.try_next().await.expect("watch stream") {
            if let WatchEvent::Added(s) = event {
                return s;
            }
        }
        panic!("watch ended without an ADDED event");
    })
    .await
    .expect("an ADDED event in time");
    assert_eq!(added.metadata.name.as_deref(), Some("watched"));
    assert_eq!(added.data.unwrap()["k"].0, b"v");
}

/// What the operator's controllers do: a kube-runtime watcher (list, then watch with
/// bookmarks) over Secrets, through the shim, seeing create, patch and delete.
#[tokio::test]
async fn runtime_watcher_on_secrets_sees_create_patch_and_delete() {
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("smoke-watcher").await;
    let secrets: Api<Secret> = Api::namespaced(env.client(), &ns);
    let mut events = watcher(secrets.clone(), watcher::Config::default()).boxed();

    let next_event = async |events: &mut BoxStream<'_, _>| {
        tokio::time::timeout(TIMEOUT, events.try_next())
            .await
            .expect("a watcher event in time")
            .expect("watcher stream")
            .expect("watcher stream not ended")
    };
    // The initial (empty) list.
    loop {
        if let watcher::Event::InitDone = next_event(&mut events).await {
            break;
        }
    }

    secrets
        .create(&PostParams::default(), &secret("rotated", "k", b"one"))
        .await
        .expect("create Secret");
    let patch = serde_json::json!({ "data": { "k": "dHdv" } }); // "two"
    secrets
        .patch("rotated", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("merge-patch Secret");
    secrets
        .delete("rotated", &DeleteParams::default())
        .await
        .expect("delete Secret");

    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("deleted") {
        match next_event(&mut events).await {
            watcher::Event::Apply(s) => {
                seen.push(String::from_utf8(s.data.unwrap()["k"].0.clone()).unwrap())
            }
            watcher::Event::Delete(_) => seen.push("deleted".into()),
            _ => {}
        }
    }
    assert_eq!(seen, ["one", "two", "deleted"]);
}

#[tokio::test]
async fn wait_for_sees_a_secret_applied_from_yaml() {
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("smoke-apply").await;
    let yaml = r#"
apiVersion: v1
kind: Secret
metadata:
  name: from-yaml
data:
  token: dG9rZW4=
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  mode: test
"#;
    let applied = env.apply_yaml(&ns, yaml).await;
    assert_eq!(applied.len(), 2);

    let secrets: Api<Secret> = Api::namespaced(env.client(), &ns);
    let found = wait_for(
        &secrets,
        "from-yaml",
        |s| s.data.as_ref().is_some_and(|d| d.contains_key("token")),
        TIMEOUT,
    )
    .await;
    assert_eq!(found.data.unwrap()["token"].0, b"token");

    let configmaps: Api<ConfigMap> = Api::namespaced(env.client(), &ns);
    let settings = configmaps.get("settings").await.expect("get ConfigMap");
    assert_eq!(settings.data.unwrap()["mode"], "test");
}

#[tokio::test]
async fn lease_can_be_created_and_read_back() {
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("smoke-lease").await;
    let leases: Api<Lease> = Api::namespaced(env.client(), &ns);

    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("kmailops-leader".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("pod-a".into()),
            lease_duration_seconds: Some(15),
            ..Default::default()
        }),
    };
    leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("create Lease");
    let read = leases.get("kmailops-leader").await.expect("get Lease");
    let spec = read.spec.expect("Lease has a spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("pod-a"));
    assert_eq!(spec.lease_duration_seconds, Some(15));
}

// The shim's rewriting rules, without a server.

fn mapped(path: &str) -> Option<String> {
    standin_uri(&path.parse().unwrap()).map(|u| u.to_string())
}

#[test]
fn shim_moves_secret_and_configmap_paths_to_the_standin_group() {
    assert_eq!(
        mapped("/api/v1/namespaces/a/secrets/s?fieldManager=x").as_deref(),
        Some("/apis/core.testing.k8s.io/v1/namespaces/a/secrets/s?fieldManager=x")
    );
    assert_eq!(
        mapped("/api/v1/secrets?watch=true").as_deref(),
        Some("/apis/core.testing.k8s.io/v1/secrets?watch=true")
    );
    assert_eq!(
        mapped("/api/v1/namespaces/a/configmaps").as_deref(),
        Some("/apis/core.testing.k8s.io/v1/namespaces/a/configmaps")
    );
}

#[test]
fn shim_leaves_other_paths_alone() {
    assert_eq!(mapped("/api/v1/namespaces/secrets"), None);
    assert_eq!(mapped("/api/v1/namespaces/a/pods"), None);
    assert_eq!(
        mapped("/apis/kmailops.io/v1alpha1/namespaces/a/emails"),
        None
    );
}

#[test]
fn shim_rewrites_request_bodies_of_secrets_only() {
    let secret = to_standin(Bytes::from_static(
        br#"{"apiVersion":"v1","kind":"Secret"}"#,
    ));
    let secret: Value = serde_json::from_slice(&secret).unwrap();
    assert_eq!(secret["apiVersion"], "core.testing.k8s.io/v1");

    let delete: &[u8] = br#"{"apiVersion":"v1","kind":"DeleteOptions"}"#;
    assert_eq!(to_standin(Bytes::from_static(delete)), delete);
}

#[test]
fn shim_rewrites_response_api_versions_at_any_depth() {
    let event =
        br#"{"type":"ADDED","object":{"apiVersion":"core.testing.k8s.io/v1","kind":"Secret"}}"#;
    let event: Value = serde_json::from_slice(&from_standin(event)).unwrap();
    assert_eq!(event["object"]["apiVersion"], "v1");
}
