//! Harness for integration tests against a real Kubernetes API server.
//!
//! Use it from a test file with `mod support;` and `let env = support::TestEnv::get().await;`.
//!
//! Where the server comes from, in this order:
//! 1. `KUBECONFIG` when set: any cluster, e.g. a full one given from outside.
//! 2. `$KMAILOPS_TESTENV_DIR/kubeconfig` (default `<repo>/target/testenv/kubeconfig`), written
//!    by `scripts/k8s-testenv.sh start`: apiextensions-apiserver on etcd, CRDs only.
//!
//! With neither, every test panics: integration tests fail, they never skip. `~/.kube/config`
//! is deliberately not used, so that a developer's own cluster is never written to by accident.
//!
//! On the testenv server (no `/api/v1`), Secrets and ConfigMaps go through
//! [`core_standin`]; read its docs for what that does not cover (`stringData` among others).
//! Leases and `events.k8s.io` Events are stand-in CRDs there, used unchanged.
#![allow(dead_code)] // each test binary uses its own subset of the harness

pub mod api_proxy;
pub mod core_standin;
pub mod mock_mailersend;
pub mod operator;

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config, Resource};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;

use core_standin::CoreStandInLayer;

/// The field manager of everything the harness applies.
pub const FIELD_MANAGER: &str = "kmailops-tests";

/// The stand-in CRDs that `scripts/k8s-testenv.sh start` creates on the testenv server.
const STANDIN_CRDS: &[&str] = &[
    "leases.coordination.k8s.io",
    "events.events.k8s.io",
    "secrets.core.testing.k8s.io",
    "configmaps.core.testing.k8s.io",
];

const HOW_TO_START: &str = "no Kubernetes API server for the integration tests: run \
     `scripts/k8s-testenv.sh install && scripts/k8s-testenv.sh start` \
     (or set KUBECONFIG to a cluster the tests may write to)";

/// What is set up once per test binary.
struct Shared {
    config: Config,
    /// `/api/v1` is served: a full cluster, no shim, real Namespaces.
    full_cluster: bool,
}

static SHARED: OnceCell<Shared> = OnceCell::const_new();
static SECOND: OnceCell<Shared> = OnceCell::const_new();

/// The kubeconfig of a second, separate API server (a cluster rebuilt from Git):
/// `KMAILOPS_SECOND_KUBECONFIG`, else `<repo>/target/testenv2/kubeconfig`, which
/// `scripts/test.sh` starts (`KMAILOPS_TESTENV_DIR=target/testenv2` with other ports).
fn second_kubeconfig_path() -> PathBuf {
    std::env::var_os("KMAILOPS_SECOND_KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/testenv2/kubeconfig")
        })
}

/// A handle on the test API server, with the kmailops CRDs installed and established.
#[derive(Clone)]
pub struct TestEnv {
    client: Client,
    full_cluster: bool,
}

impl TestEnv {
    /// The environment for the calling test.
    ///
    /// Setup (finding the server, installing the CRDs) runs once per test binary. The
    /// `Client` is new on every call: a kube `Client` runs background tasks on the tokio
    /// runtime that built it, and each `#[tokio::test]` has its own runtime, which is gone
    /// once that test ends.
    pub async fn get() -> TestEnv {
        let shared = SHARED.get_or_init(set_up).await;
        TestEnv {
            client: build_client(&shared.config, !shared.full_cluster),
            full_cluster: shared.full_cluster,
        }
    }

    /// A second API server, separate from the first (its own etcd): what a cluster rebuilt
    /// from Git sees. Fails, never skips, when it is not running.
    pub async fn second() -> TestEnv {
        let shared = SECOND
            .get_or_init(|| async {
                let path = second_kubeconfig_path();
                if !path.exists() {
                    panic!(
                        "no second API server: start one with `KMAILOPS_TESTENV_DIR=$PWD/target/testenv2 \
                         KMAILOPS_TESTENV_API_PORT=26543 KMAILOPS_TESTENV_ETCD_PORT=23890 \
                         scripts/k8s-testenv.sh start` (or set KMAILOPS_SECOND_KUBECONFIG); {} does not exist",
                        path.display()
                    );
                }
                let kubeconfig = Kubeconfig::read_from(&path)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
                let config =
                    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                        .await
                        .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
                set_up_with(config).await
            })
            .await;
        TestEnv {
            client: build_client(&shared.config, !shared.full_cluster),
            full_cluster: shared.full_cluster,
        }
    }

    /// The server of the kubeconfig at `path`, set up like [`TestEnv::get`]'s (CRDs installed,
    /// stand-ins checked), for a test that runs a server of its own (tests/churn.rs restarts
    /// its API server). Set up anew on every call.
    pub async fn at(path: &std::path::Path) -> TestEnv {
        let kubeconfig = Kubeconfig::read_from(path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
        let shared = set_up_with(config).await;
        TestEnv {
            client: build_client(&shared.config, !shared.full_cluster),
            full_cluster: shared.full_cluster,
        }
    }

    /// A client for this server; on the testenv server it carries the Secret/ConfigMap shim,
    /// so hand it to the operator code under test as is.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Whether Secrets and ConfigMaps are served by stand-in CRDs through the shim
    /// (testenv server) rather than by a real `/api/v1` (full cluster).
    pub fn uses_core_standins(&self) -> bool {
        !self.full_cluster
    }

    /// A namespace name of its own for one test, e.g. `email-sends-3-9f2c01ab`.
    ///
    /// On the testenv server nothing needs creating (NamespaceLifecycle admission is off);
    /// on a full cluster a Namespace labelled `kmailops.io/test=true` is created (and left,
    /// for `kubectl delete ns -l kmailops.io/test=true`).
    pub async fn unique_namespace(&self, prefix: &str) -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut base: String = prefix
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(40)
            .collect();
        base = base.trim_matches('-').to_string();
        if base.is_empty() {
            base = "test".into();
        }
        // The random part keeps runs apart when tests are re-run against the same server.
        let name = format!(
            "{base}-{}-{:08x}",
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        if self.full_cluster {
            let ns = Namespace {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some([("kmailops.io/test".to_string(), "true".to_string())].into()),
                    ..Default::default()
                },
                ..Default::default()
            };
            Api::<Namespace>::all(self.client())
                .create(&PostParams::default(), &ns)
                .await
                .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        }
        name
    }

    /// Server-side applies every document of a (multi-document) YAML string into `ns`, with
    /// field manager [`FIELD_MANAGER`] and force, and returns the applied objects.
    ///
    /// Kinds: the kmailops kinds, Secret, ConfigMap, Lease and `events.k8s.io` Event. A
    /// namespace in the YAML is replaced by `ns`. Secrets must use `data`, not `stringData`
    /// (see [`core_standin`]).
    pub async fn apply_yaml(&self, ns: &str, yaml: &str) -> Vec<DynamicObject> {
        let mut applied = Vec::new();
        for document in serde_yaml::Deserializer::from_str(yaml) {
            let value = serde_yaml::Value::deserialize(document)
                .unwrap_or_else(|e| panic!("apply_yaml: invalid YAML: {e}"));
            if value.is_null() {
                continue; // an empty document, e.g. after a trailing `---`
            }
            let mut obj: DynamicObject = serde_json::to_value(&value)
                .and_then(serde_json::from_value)
                .unwrap_or_else(|e| panic!("apply_yaml: not a Kubernetes object: {e}"));
            let types = obj
                .types
                .clone()
                .expect("apply_yaml: a document without apiVersion/kind");
            let name = obj
                .metadata
                .name
                .clone()
                .expect("apply_yaml: a document without metadata.name");
            let (resource, namespaced) = resource_for(&types.api_version, &types.kind);
            let api: Api<DynamicObject> = if namespaced {
                obj.metadata.namespace = Some(ns.to_string());
                Api::namespaced_with(self.client(), ns, &resource)
            } else {
                obj.metadata.namespace = None;
                Api::all_with(self.client(), &resource)
            };
            let result = api
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&obj),
                )
                .await
                .unwrap_or_else(|e| panic!("apply_yaml: applying {} {ns}/{name}: {e}", types.kind));
            applied.push(result);
        }
        applied
    }
}

/// Waits until the object `name` exists and satisfies `predicate`, and returns it; panics
/// after `timeout` with the object as last seen.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    predicate: impl Fn(&K) -> bool,
    timeout: Duration,
) -> K
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + 'static,
{
    let condition = move |obj: Option<&K>| obj.is_some_and(&predicate);
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, condition)).await {
        Ok(Ok(Some(obj))) => obj,
        Ok(Ok(None)) => unreachable!("the condition only matches an existing object"),
        Ok(Err(e)) => panic!("wait_for {name}: watch failed: {e}"),
        Err(_) => {
            let last = api.get_opt(name).await;
            panic!(
                "wait_for: {} {name} did not reach the expected state in {timeout:?}; last seen: {last:#?}",
                std::any::type_name::<K>()
            )
        }
    }
}

/// The `ApiResource` for an apiVersion/kind, and whether it is namespaced.
fn resource_for(api_version: &str, kind: &str) -> (ApiResource, bool) {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    for crd in kmailops::crds::all() {
        let spec = &crd.spec;
        if spec.group == group
            && spec.names.kind == kind
            && spec.versions.iter().any(|v| v.name == version)
        {
            let resource = ApiResource {
                group: group.to_string(),
                version: version.to_string(),
                api_version: api_version.to_string(),
                kind: kind.to_string(),
                plural: spec.names.plural.clone(),
            };
            return (resource, spec.scope == "Namespaced");
        }
    }
    let builtins = [
        ApiResource::erase::<Secret>(&()),
        ApiResource::erase::<ConfigMap>(&()),
        ApiResource::erase::<Lease>(&()),
        ApiResource::erase::<Event>(&()),
    ];
    match builtins
        .into_iter()
        .find(|r| r.api_version == api_version && r.kind == kind)
    {
        Some(resource) => (resource, true),
        None => panic!(
            "apply_yaml: unsupported kind {api_version}/{kind} (kmailops kinds, v1 Secret/ConfigMap, \
             coordination.k8s.io/v1 Lease, events.k8s.io/v1 Event)"
        ),
    }
}

fn kubeconfig_path() -> PathBuf {
    let dir = std::env::var_os("KMAILOPS_TESTENV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/testenv"));
    dir.join("kubeconfig")
}

async fn load_config() -> Config {
    let kubeconfig = match Kubeconfig::from_env() {
        Ok(Some(kubeconfig)) => kubeconfig,
        Ok(None) => {
            let path = kubeconfig_path();
            if !path.exists() {
                panic!("{HOW_TO_START} ({} does not exist)", path.display());
            }
            Kubeconfig::read_from(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        }
        Err(e) => panic!("reading the kubeconfig(s) in KUBECONFIG: {e}"),
    };
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("loading the kubeconfig: {e}"))
}

fn build_client(config: &Config, core_standins: bool) -> Client {
    let builder = ClientBuilder::try_from(config.clone())
        .unwrap_or_else(|e| panic!("building a kube client: {e}"));
    if core_standins {
        builder.with_layer(&CoreStandInLayer).build()
    } else {
        builder.build()
    }
}

async fn set_up() -> Shared {
    // The crate builds rustls with ring only; make that the process default explicitly so
    // nothing depends on which providers other dependencies happen to enable.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let config = load_config().await;
    set_up_with(config).await
}

async fn set_up_with(config: Config) -> Shared {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let url = config.cluster_url.clone();
    let client = build_client(&config, false);

    // The raw status, not `request_text`: the testenv server answers a plain-text 404 here,
    // which kube cannot read as a Status.
    let probe = http::Request::get("/api/v1")
        .body(kube::client::Body::empty())
        .expect("a valid request");
    let full_cluster = match client.send(probe).await {
        Ok(response) if response.status().is_success() => true,
        Ok(response) if response.status() == http::StatusCode::NOT_FOUND => false,
        Ok(response) => panic!("GET {url}api/v1 answered {}", response.status()),
        Err(e) => panic!("{HOW_TO_START}; the API server at {url} did not answer: {e}"),
    };

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    if !full_cluster {
        for name in STANDIN_CRDS {
            if crds.get_opt(name).await.ok().flatten().is_none() {
                panic!(
                    "the stand-in CRD {name} is missing on {url}: restart the test server with \
                     `scripts/k8s-testenv.sh stop && scripts/k8s-testenv.sh start`"
                );
            }
            wait_established(&crds, name).await;
        }
    }

    let params = PatchParams::apply(FIELD_MANAGER).force();
    for crd in kmailops::crds::all() {
        let name = crd.metadata.name.clone().expect("a CRD has a name");
        crds.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .unwrap_or_else(|e| {
                panic!("the API server at {url} refused kmailops's CRD {name} (kmailops::crds::all()): {e}")
            });
        wait_established(&crds, &name).await;
    }
    Shared {
        config,
        full_cluster,
    }
}

async fn wait_established(crds: &Api<CustomResourceDefinition>, name: &str) {
    let established = conditions::is_crd_established();
    match tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(crds.clone(), name, established),
    )
    .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => panic!("waiting for CRD {name}: {e}"),
        Err(_) => panic!("CRD {name} not Established after 30 s"),
    }
}
