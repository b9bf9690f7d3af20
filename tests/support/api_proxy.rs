//! A loopback HTTP proxy in front of the test API server that sends every request through a
//! given client, i.e. through the Secret/ConfigMap stand-in shim: a program that talks to it
//! (the `kmailops` binary) sees an API server with Secrets. Plain HTTP on loopback: the
//! upstream hop, with TLS and the client certificate, is the client's.
//!
//! It is also the **discovery front** that lets a stock `kubectl` work there (see
//! [`discovery`]): the API server serves no `/api`, `/apis` or core group, so this proxy
//! answers those itself and passes everything else through.
//!
//! Used by process-level tests, the kubectl tests and `tools/testenv` (scripts/demo.sh).

use std::net::SocketAddr;
use std::path::Path;

use axum::body::Body as AxumBody;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use kube::Client;

/// Starts the proxy on `listen` (port 0 picks one) and returns its address.
pub async fn start(client: Client, listen: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = discovery::routes().fallback(forward).with_state(client);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

/// A kubeconfig that points at the proxy at `addr`.
pub fn write_kubeconfig(addr: SocketAddr, path: &Path) -> std::io::Result<()> {
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kmailops-testenv\n  cluster:\n    server: http://{addr}\ncontexts:\n- name: kmailops-testenv\n  context:\n    cluster: kmailops-testenv\n    user: anonymous\nusers:\n- name: anonymous\n  user: {{}}\ncurrent-context: kmailops-testenv\n"
    );
    std::fs::write(path, kubeconfig)
}

pub(crate) async fn forward(State(client): State<Client>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, 64 * 1024 * 1024).await {
        Ok(b) => b,
        Err(e) => return (http::StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let mut upstream = http::Request::builder().method(parts.method).uri(
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/"),
    );
    for (name, value) in &parts.headers {
        if name == http::header::HOST || name == http::header::CONTENT_LENGTH {
            continue;
        }
        upstream = upstream.header(name, value);
    }
    let request = match upstream.body(kube::client::Body::from(bytes.to_vec())) {
        Ok(r) => r,
        Err(e) => return (http::StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    match client.send(request).await {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            Response::from_parts(parts, AxumBody::new(body))
        }
        Err(e) => (http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

/// What a stock `kubectl` needs from an API server that the apiextensions-apiserver lacks:
///
/// - `GET /api` and `/api/v1`: the core group, listing the resources the stand-ins serve
///   (Secrets and ConfigMaps through the shim, Events and Namespaces below);
/// - `GET /apis`: the groups of the CRDs it serves (the stand-in group itself left out), so
///   `kubectl get emails`, short names (`esc`) and `kubectl explain` resolve; the per-group
///   documents (`/apis/kmailops.io/v1alpha1`) and `/openapi/v3` come from the server itself;
/// - `GET /openapi/v3[/apis/{group}/{version}]`: the server publishes no OpenAPI for its CRDs
///   when it runs alone, so the documents of the CRD groups are built here from the CRDs'
///   schemas (`kubectl explain email.spec.notAfter`);
/// - `GET /api/v1/[namespaces/{ns}/]events`: the `events.k8s.io/v1` Events the operator
///   records, converted to core `v1` Events and filtered by `fieldSelector` here (the server
///   can not select custom resources by `involvedObject.*`), which `kubectl describe` lists;
/// - `/api/v1/namespaces[/{name}]`: Namespaces are not stored (the server runs without
///   NamespaceLifecycle, so every namespace name works); reads show the namespaces that
///   hold kmailops objects or stand-ins, and a create or apply is answered as done.
///
/// Answers use plain `application/json`, so kubectl falls back from aggregated to legacy
/// discovery.
pub mod discovery {
    use axum::Json;
    use axum::Router;
    use axum::extract::{Path, Request, State};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use http::StatusCode;
    use kube::Client;
    use serde_json::{Value, json};

    const STANDIN_GROUP: &str = "core.testing.k8s.io";

    pub fn routes() -> Router<Client> {
        Router::new()
            .route("/api", get(core_versions))
            .route("/api/v1", get(core_resources))
            .route("/apis", get(groups))
            .route("/openapi/v3", get(openapi_index))
            .route("/openapi/v3/apis/{group}/{version}", get(openapi_group))
            .route("/api/v1/events", get(all_events))
            .route("/api/v1/namespaces/{ns}/events", get(namespace_events))
            .route(
                "/api/v1/namespaces",
                get(list_namespaces).post(create_namespace),
            )
            .route(
                "/api/v1/namespaces/{name}",
                get(get_namespace)
                    .patch(get_namespace)
                    .put(get_namespace)
                    .delete(get_namespace),
            )
    }

    async fn core_versions(req: Request) -> Json<Value> {
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("127.0.0.1")
            .to_string();
        Json(json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
        }))
    }

    fn resource(name: &str, kind: &str, namespaced: bool, short: &[&str], verbs: &[&str]) -> Value {
        json!({
            "name": name, "singularName": kind.to_lowercase(), "namespaced": namespaced,
            "kind": kind, "verbs": verbs, "shortNames": short,
        })
    }

    async fn core_resources() -> Json<Value> {
        let all = [
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ];
        Json(json!({
            "kind": "APIResourceList",
            "groupVersion": "v1",
            "resources": [
                resource("configmaps", "ConfigMap", true, &["cm"], &all),
                resource("secrets", "Secret", true, &[], &all),
                resource("events", "Event", true, &["ev"], &["get", "list"]),
                resource("namespaces", "Namespace", false, &["ns"], &["create", "delete", "get", "list", "patch", "update"]),
            ],
        }))
    }

    async fn upstream(client: &Client, path: &str) -> Result<Value, Response> {
        let req = http::Request::get(path)
            .body(Vec::new())
            .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()).into_response())?;
        client
            .request::<Value>(req)
            .await
            .map_err(|e| (StatusCode::BAD_GATEWAY, e.to_string()).into_response())
    }

    async fn groups(State(client): State<Client>) -> Result<Json<Value>, Response> {
        let crds = upstream(
            &client,
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        )
        .await?;
        let mut groups: Vec<Value> = vec![group("apiextensions.k8s.io", &["v1".into()], "v1")];
        let mut seen = std::collections::BTreeMap::<String, (Vec<String>, String)>::new();
        for crd in crds["items"].as_array().into_iter().flatten() {
            let name = crd["spec"]["group"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if name.is_empty() || name == STANDIN_GROUP {
                continue;
            }
            let entry = seen.entry(name).or_default();
            for v in crd["spec"]["versions"].as_array().into_iter().flatten() {
                let Some(version) = v["name"].as_str() else {
                    continue;
                };
                if v["served"] == true && !entry.0.iter().any(|x| x == version) {
                    entry.0.push(version.to_string());
                }
                if v["storage"] == true {
                    entry.1 = version.to_string();
                }
            }
        }
        for (name, (versions, storage)) in seen {
            if versions.is_empty() {
                continue;
            }
            let preferred = if versions.contains(&storage) {
                storage
            } else {
                versions[0].clone()
            };
            groups.push(group(&name, &versions, &preferred));
        }
        Ok(Json(
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
        ))
    }

    fn group(name: &str, versions: &[String], preferred: &str) -> Value {
        let gv = |v: &str| json!({"groupVersion": format!("{name}/{v}"), "version": v});
        json!({
            "name": name,
            "versions": versions.iter().map(|v| gv(v)).collect::<Vec<_>>(),
            "preferredVersion": gv(preferred),
        })
    }

    async fn crds(client: &Client) -> Result<Vec<Value>, Response> {
        let list = upstream(
            client,
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        )
        .await?;
        Ok(list["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c["spec"]["group"] != STANDIN_GROUP)
            .collect())
    }

    /// A short, stable fingerprint of a document, for the `hash` kubectl caches by.
    fn fingerprint(v: &Value) -> String {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        v.to_string().hash(&mut h);
        format!("{:016X}", h.finish())
    }

    async fn openapi_index(State(client): State<Client>) -> Result<Json<Value>, Response> {
        let mut index = upstream(&client, "/openapi/v3").await?;
        let crds = crds(&client).await?;
        for crd in &crds {
            let group = crd["spec"]["group"].as_str().unwrap_or_default();
            for v in crd["spec"]["versions"].as_array().into_iter().flatten() {
                let (Some(version), true) = (v["name"].as_str(), v["served"] == true) else {
                    continue;
                };
                let key = format!("apis/{group}/{version}");
                let doc = openapi_document(&crds, group, version);
                index["paths"][&key] = json!({
                    "serverRelativeURL": format!("/openapi/v3/{key}?hash={}", fingerprint(&doc)),
                });
            }
        }
        Ok(Json(index))
    }

    async fn openapi_group(
        State(client): State<Client>,
        Path((group, version)): Path<(String, String)>,
        req: Request,
    ) -> Response {
        if group == "apiextensions.k8s.io" {
            return super::forward(State(client), req).await;
        }
        match crds(&client).await {
            Ok(crds) => Json(openapi_document(&crds, &group, &version)).into_response(),
            Err(r) => r,
        }
    }

    /// An OpenAPI v3 document for one group/version, one schema per kind, named and tagged
    /// the way kube-apiserver publishes them (`io.kmailops.v1alpha1.Email`).
    pub fn openapi_document(crds: &[Value], group: &str, version: &str) -> Value {
        let reversed: Vec<&str> = group.split('.').rev().collect();
        let mut schemas = serde_json::Map::new();
        let mut paths = serde_json::Map::new();
        for crd in crds.iter().filter(|c| c["spec"]["group"] == group) {
            let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or_default();
            let plural = crd["spec"]["names"]["plural"].as_str().unwrap_or_default();
            for v in crd["spec"]["versions"].as_array().into_iter().flatten() {
                if v["name"] != version {
                    continue;
                }
                let gvk = json!({"group": group, "version": version, "kind": kind});
                let name = format!("{}.{version}.{kind}", reversed.join("."));
                let mut schema = v["schema"]["openAPIV3Schema"].clone();
                schema["x-kubernetes-group-version-kind"] = json!([gvk]);
                schemas.insert(name.clone(), schema);
                // kubectl explain finds a resource's kind through the GET of its path, and
                // kubectl apply asks the PATCH whether the server validates fields itself
                // (`fieldValidation`); without it kubectl validates against /openapi/v2,
                // which this server does not have.
                let scope = if crd["spec"]["scope"] == "Namespaced" {
                    "namespaces/{namespace}/"
                } else {
                    ""
                };
                let schema_ref = json!({"content": {"application/json": {"schema": {
                    "$ref": format!("#/components/schemas/{name}"),
                }}}});
                let params = json!([
                    {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
                    {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                    {"name": "force", "in": "query", "schema": {"type": "boolean"}},
                ]);
                paths.insert(
                    format!("/apis/{group}/{version}/{scope}{plural}/{{name}}"),
                    json!({
                        "get": {
                            "x-kubernetes-action": "get",
                            "x-kubernetes-group-version-kind": gvk,
                            "responses": {"200": schema_ref},
                        },
                        "patch": {
                            "x-kubernetes-action": "patch",
                            "x-kubernetes-group-version-kind": gvk,
                            "parameters": params,
                            "responses": {"200": schema_ref},
                        },
                        "put": {
                            "x-kubernetes-action": "put",
                            "x-kubernetes-group-version-kind": gvk,
                            "parameters": params,
                            "responses": {"200": schema_ref},
                        },
                    }),
                );
                paths.insert(
                    format!("/apis/{group}/{version}/{scope}{plural}"),
                    json!({"post": {
                        "x-kubernetes-action": "post",
                        "x-kubernetes-group-version-kind": gvk,
                        "parameters": params,
                        "responses": {"201": schema_ref},
                    }}),
                );
            }
        }
        json!({
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes CRDs (kmailops test front)", "version": "unversioned"},
            "paths": paths,
            "components": {"schemas": schemas},
        })
    }

    async fn all_events(State(client): State<Client>, req: Request) -> Response {
        events(client, None, req).await
    }

    async fn namespace_events(
        State(client): State<Client>,
        Path(ns): Path<String>,
        req: Request,
    ) -> Response {
        events(client, Some(ns), req).await
    }

    async fn events(client: Client, ns: Option<String>, req: Request) -> Response {
        let query = req.uri().query().unwrap_or_default();
        let param = |key: &str| {
            form_urlencoded_pairs(query)
                .into_iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
        };
        let mut path = match &ns {
            Some(ns) => format!("/apis/events.k8s.io/v1/namespaces/{ns}/events"),
            None => "/apis/events.k8s.io/v1/events".to_string(),
        };
        if let Some(labels) = param("labelSelector") {
            path.push_str(&format!("?labelSelector={}", percent_encode(&labels)));
        }
        let list = match upstream(&client, &path).await {
            Ok(v) => v,
            Err(r) => return r,
        };
        let selector = param("fieldSelector").unwrap_or_default();
        let items: Vec<Value> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(to_core_event)
            .filter(|e| matches_fields(e, &selector))
            .collect();
        Json(json!({
            "kind": "EventList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": list["metadata"]["resourceVersion"]},
            "items": items,
        }))
        .into_response()
    }

    /// An `events.k8s.io/v1` Event as the core `v1` Event it stands for.
    pub fn to_core_event(e: &Value) -> Value {
        let mut metadata = e["metadata"].clone();
        if let Some(m) = metadata.as_object_mut() {
            m.remove("managedFields");
        }
        let component = e["reportingController"]
            .as_str()
            .or(e["deprecatedSource"]["component"].as_str());
        let mut out = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": metadata,
            "involvedObject": e["regarding"],
            "reason": e["reason"],
            "message": e["note"],
            "type": e["type"],
            "source": {"component": component, "host": e["deprecatedSource"]["host"]},
            "firstTimestamp": e["deprecatedFirstTimestamp"],
            "lastTimestamp": e["deprecatedLastTimestamp"],
            "count": e["deprecatedCount"],
            "eventTime": e["eventTime"],
            "series": e["series"],
            "action": e["action"],
            "related": e["related"],
            "reportingComponent": e["reportingController"],
            "reportingInstance": e["reportingInstance"],
        });
        if let Some(o) = out.as_object_mut() {
            o.retain(|_, v| !v.is_null());
        }
        out
    }

    /// `fieldSelector` terms (`a.b=v`, `a.b==v`, `a.b!=v`, comma-separated) against `obj`.
    pub fn matches_fields(obj: &Value, selector: &str) -> bool {
        selector.split(',').filter(|t| !t.is_empty()).all(|term| {
            let (path, want, equal) = if let Some((p, v)) = term.split_once("!=") {
                (p, v, false)
            } else if let Some((p, v)) = term.split_once("==") {
                (p, v, true)
            } else if let Some((p, v)) = term.split_once('=') {
                (p, v, true)
            } else {
                return true;
            };
            let mut value = obj;
            for key in path.trim().split('.') {
                value = &value[key];
            }
            let actual = match value {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (actual == want.trim()) == equal
        })
    }

    fn form_urlencoded_pairs(query: &str) -> Vec<(String, String)> {
        query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect()
    }

    fn percent_decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    match std::str::from_utf8(&bytes[i + 1..i + 3])
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                    {
                        Some(b) => {
                            out.push(b);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    fn percent_encode(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    /// The namespaces that hold kmailops objects, Secrets or ConfigMaps.
    async fn namespace_names(client: &Client) -> Result<Vec<String>, Response> {
        let mut names = std::collections::BTreeSet::new();
        for path in [
            "/apis/kmailops.io/v1alpha1/emails",
            "/apis/kmailops.io/v1alpha1/emailsenderconfigs",
            "/apis/kmailops.io/v1alpha1/emailtemplates",
            "/apis/core.testing.k8s.io/v1/secrets",
            "/apis/core.testing.k8s.io/v1/configmaps",
        ] {
            let Ok(list) = upstream(client, path).await else {
                continue;
            };
            for item in list["items"].as_array().into_iter().flatten() {
                if let Some(ns) = item["metadata"]["namespace"].as_str() {
                    names.insert(ns.to_string());
                }
            }
        }
        Ok(names.into_iter().collect())
    }

    fn namespace(name: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        })
    }

    async fn list_namespaces(State(client): State<Client>) -> Result<Json<Value>, Response> {
        let items: Vec<Value> = namespace_names(&client)
            .await?
            .iter()
            .map(|n| namespace(n))
            .collect();
        Ok(Json(json!({
            "apiVersion": "v1", "kind": "NamespaceList", "metadata": {}, "items": items,
        })))
    }

    async fn get_namespace(Path(name): Path<String>) -> Json<Value> {
        Json(namespace(&name))
    }

    async fn create_namespace(body: axum::body::Bytes) -> Response {
        let sent: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        match sent["metadata"]["name"].as_str() {
            Some(name) => (StatusCode::CREATED, Json(namespace(name))).into_response(),
            None => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "metadata.name is required",
            )
                .into_response(),
        }
    }
}
