//! Serves `/api/v1` Secrets and ConfigMaps from stand-in CRDs.
//!
//! The test API server (apiextensions-apiserver, see `scripts/k8s-testenv.sh`) serves only
//! CRDs, and the core group cannot be a CRD. `scripts/k8s-testenv.sh start` therefore creates
//! `secrets.core.testing.k8s.io` and `configmaps.core.testing.k8s.io`, and this tower layer,
//! sitting on the test client, moves every request for
//!
//! - `/api/v1/{secrets,configmaps}[?...]`
//! - `/api/v1/namespaces/{ns}/{secrets,configmaps}[/...][?...]`
//!
//! onto `/apis/core.testing.k8s.io/v1/...`, rewrites `apiVersion: v1` to
//! `core.testing.k8s.io/v1` in the request body and back in the response body (watch streams
//! line by line). `Api<Secret>` then works unchanged, for the tests and for the operator code
//! they hand this client to.
//!
//! A Secret's `stringData` is converted as the real API server does it: each value is base64
//! encoded into `data` under the same key (winning over a `data` entry of that key), and
//! `stringData` is dropped, so it is never stored or read back. This happens for Secret bodies
//! (create, replace, server-side apply); see [`to_standin`].
//!
//! Strategic merge patches of Leases (a stand-in CRD too) are relabelled as JSON merge
//! patches, which mean the same for a Lease; see [`lease_patch_as_merge_patch`].
//!
//! What it does not do, so tests must not rely on it:
//! - `stringData` in a patch body without `kind: Secret` (merge, strategic merge or JSON
//!   patch) is not converted: patch `data` instead.
//! - `type`, immutability and the size limit of Secrets are not enforced.
//! - Field selectors other than `metadata.name` / `metadata.namespace` are refused by the
//!   server for custom resources (e.g. `type=...` on Secrets).

use std::sync::Arc;
use std::task::{Context, Poll};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, stream};
use http::{Request, Response, Uri, header};
use kube::client::Body;
use serde_json::Value;
use tokio::sync::Mutex;
use tower::{BoxError, Layer, Service, ServiceExt};

/// The group of the stand-in CRDs that `scripts/k8s-testenv.sh start` creates.
pub const STANDIN_GROUP: &str = "core.testing.k8s.io";
const STANDIN_API_VERSION: &str = "core.testing.k8s.io/v1";
const CORE_API_VERSION: &str = "v1";
/// The core resources that are redirected, with their kinds.
const REDIRECTED: &[(&str, &str)] = &[("secrets", "Secret"), ("configmaps", "ConfigMap")];

/// The layer to give [`kube::client::ClientBuilder::with_layer`].
#[derive(Clone, Copy, Debug, Default)]
pub struct CoreStandInLayer;

impl<S> Layer<S> for CoreStandInLayer {
    type Service = CoreStandIn<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CoreStandIn {
            inner: Arc::new(Mutex::new(inner)),
        }
    }
}

/// See the module docs.
///
/// kube's default stack is a non-`Clone` `BoxService`, but rewriting a request needs an
/// `async` body read before the inner call, so the inner service is shared behind a mutex that
/// is held only for `ready` + `call` (not while the response is awaited).
pub struct CoreStandIn<S> {
    inner: Arc<Mutex<S>>,
}

impl<S> Clone for CoreStandIn<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S, B> Service<Request<Body>> for CoreStandIn<S>
where
    S: Service<Request<Body>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: axum::body::HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<axum::body::Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness of the inner service is awaited in `call`, under the lock.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let inner = Arc::clone(&self.inner);
        async move {
            let redirected = standin_uri(req.uri());
            let req = lease_patch_as_merge_patch(req);
            let req = match &redirected {
                None => req,
                Some(uri) => {
                    let (mut parts, body) = req.into_parts();
                    let body = body.collect_bytes().await?;
                    parts.uri = uri.clone();
                    // The body length changes; let hyper compute it again.
                    parts.headers.remove(header::CONTENT_LENGTH);
                    Request::from_parts(parts, Body::from(to_standin(body)))
                }
            };
            let response = {
                let mut svc = inner.lock().await;
                svc.ready().await.map_err(Into::into)?.call(req)
            };
            let response = response.await.map_err(Into::into)?;
            if redirected.is_none() {
                return Ok(response.map(axum::body::Body::new));
            }
            let (mut parts, body) = response.into_parts();
            parts.headers.remove(header::CONTENT_LENGTH);
            Ok(Response::from_parts(parts, from_standin_stream(body)))
        }
        .boxed()
    }
}

/// Leases are a stand-in CRD here, and CRDs do not take strategic merge patches, which
/// leader-election libraries send for Leases. A Lease has no lists with merge keys, so a
/// strategic merge patch of it means the same as a JSON merge patch: relabel it.
fn lease_patch_as_merge_patch(mut req: Request<Body>) -> Request<Body> {
    let is_lease = req.uri().path().starts_with("/apis/coordination.k8s.io/");
    let strategic = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/strategic-merge-patch+json");
    if is_lease && strategic {
        req.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/merge-patch+json"),
        );
    }
    req
}

/// The stand-in URI for a request that targets a redirected core resource, else `None`.
pub fn standin_uri(uri: &Uri) -> Option<Uri> {
    let rest = uri.path().strip_prefix("/api/v1/")?;
    let resource_part = match rest.strip_prefix("namespaces/") {
        // namespaces/{ns}/{resource}[/...]; `namespaces/{ns}` alone is a Namespace.
        Some(after_ns) => after_ns.split_once('/')?.1,
        None => rest,
    };
    let resource = resource_part.split('/').next()?;
    if !REDIRECTED.iter().any(|(plural, _)| *plural == resource) {
        return None;
    }
    let mut new = format!("/apis/{STANDIN_API_VERSION}/{rest}");
    if let Some(query) = uri.query() {
        new.push('?');
        new.push_str(query);
    }
    new.parse().ok()
}

/// Request bodies: a Secret/ConfigMap (create, replace, server-side apply) gets the stand-in
/// apiVersion, and a Secret's `stringData` is merged into `data` (see [`merge_string_data`]).
/// Anything else (DeleteOptions, JSON patches, ...) passes unchanged.
pub fn to_standin(body: Bytes) -> Bytes {
    let Ok(mut value) = serde_json::from_slice::<Value>(&body) else {
        return body;
    };
    let is_redirected_kind = value
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|kind| REDIRECTED.iter().any(|(_, k)| *k == kind));
    if !is_redirected_kind || value.get("apiVersion") != Some(&Value::from(CORE_API_VERSION)) {
        return body;
    }
    value["apiVersion"] = STANDIN_API_VERSION.into();
    if value.get("kind").and_then(Value::as_str) == Some("Secret") {
        merge_string_data(&mut value);
    }
    // managedFields name the apiVersion too; they come back from responses as "v1".
    if let Some(fields) = value
        .pointer_mut("/metadata/managedFields")
        .and_then(Value::as_array_mut)
    {
        for entry in fields {
            if entry.get("apiVersion") == Some(&Value::from(CORE_API_VERSION)) {
                entry["apiVersion"] = STANDIN_API_VERSION.into();
            }
        }
    }
    serde_json::to_vec(&value).map(Bytes::from).unwrap_or(body)
}

/// What the real API server does with a Secret's `stringData` on the way in: every entry is
/// base64 encoded into `data` under its key, replacing a `data` entry of the same key, and
/// `stringData` itself is removed (it is write-only). A `stringData` that is not an object of
/// strings is left as it is; the real server would refuse it, the stand-in CRD can not.
fn merge_string_data(secret: &mut Value) {
    let Some(object) = secret.as_object_mut() else {
        return;
    };
    let convertible = match object.get("stringData") {
        None => return,
        Some(Value::Null) => true,
        Some(Value::Object(entries)) => entries.values().all(Value::is_string),
        Some(_) => false,
    };
    if !convertible {
        return;
    }
    let Some(Value::Object(entries)) = object.remove("stringData") else {
        return; // `stringData: null` adds nothing
    };
    let data = object.entry("data").or_insert(Value::Null);
    if !data.is_object() {
        *data = Value::Object(Default::default());
    }
    if let Value::Object(data) = data {
        for (key, plain) in entries {
            if let Value::String(plain) = plain {
                data.insert(key, BASE64.encode(plain).into());
            }
        }
    }
}

/// Response bodies: every `apiVersion: core.testing.k8s.io/v1`, at any depth (list items,
/// watch event objects, managedFields), becomes `v1`.
pub fn from_standin(line: &[u8]) -> Bytes {
    let Ok(mut value) = serde_json::from_slice::<Value>(line) else {
        return Bytes::copy_from_slice(line);
    };
    rewrite_api_version(&mut value);
    match serde_json::to_vec(&value) {
        Ok(bytes) => Bytes::from(bytes),
        Err(_) => Bytes::copy_from_slice(line),
    }
}

fn rewrite_api_version(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if key == "apiVersion" && child.as_str() == Some(STANDIN_API_VERSION) {
                    *child = CORE_API_VERSION.into();
                } else {
                    rewrite_api_version(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_api_version),
        _ => {}
    }
}

/// Rewrites a response body one line at a time, as it arrives.
///
/// The API server writes compact JSON, so a newline only ever ends a document: a plain GET is
/// one line, a watch is one event per line. Lines are rewritten as soon as they are complete,
/// so a watch stream is not held back.
fn from_standin_stream<B>(body: B) -> axum::body::Body
where
    B: axum::body::HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    struct State {
        chunks: axum::body::BodyDataStream,
        pending: BytesMut,
        done: bool,
    }
    let state = State {
        chunks: axum::body::Body::new(body).into_data_stream(),
        pending: BytesMut::new(),
        done: false,
    };
    let lines = stream::unfold(state, |mut st| async move {
        loop {
            if let Some(end) = st.pending.iter().position(|b| *b == b'\n') {
                let line = st.pending.split_to(end + 1);
                let mut out = BytesMut::from(&from_standin(&line[..end])[..]);
                out.extend_from_slice(b"\n");
                return Some((Ok::<_, axum::Error>(out.freeze()), st));
            }
            if st.done {
                if st.pending.is_empty() {
                    return None;
                }
                let rest = st.pending.split();
                return Some((Ok(from_standin(&rest)), st));
            }
            match st.chunks.next().await {
                Some(Ok(chunk)) => st.pending.extend_from_slice(&chunk),
                Some(Err(err)) => {
                    st.done = true;
                    st.pending.clear();
                    return Some((Err(err), st));
                }
                None => st.done = true,
            }
        }
    });
    axum::body::Body::from_stream(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn through_shim(body: Value) -> Value {
        let out = to_standin(Bytes::from(serde_json::to_vec(&body).unwrap()));
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn secret_string_data_is_merged_into_data_as_base64_and_dropped() {
        let sent = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "data": {"token": "b2xk", "kept": "a2VwdA=="},
            "stringData": {"token": "new", "password": "p\u{e4}ss word\n"}
        });
        let stored = through_shim(sent);
        assert_eq!(stored["apiVersion"], STANDIN_API_VERSION);
        assert_eq!(stored.get("stringData"), None, "stringData is write-only");
        assert_eq!(
            stored["data"],
            json!({
                "token": "bmV3",                  // stringData wins over data
                "kept": "a2VwdA==",               // untouched
                "password": "cMOkc3Mgd29yZAo="    // UTF-8 bytes, base64
            })
        );
    }

    #[test]
    fn secret_with_only_string_data_gets_data() {
        let stored = through_shim(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "stringData": {"api-key": "k"}
        }));
        assert_eq!(stored["data"], json!({"api-key": "aw=="}));
        assert_eq!(stored.get("stringData"), None);

        let stored = through_shim(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "data": {"a": "Yg=="},
            "stringData": null
        }));
        assert_eq!(stored["data"], json!({"a": "Yg=="}));
        assert_eq!(stored.get("stringData"), None);
    }

    #[test]
    fn configmaps_and_non_secret_bodies_keep_a_string_data_field() {
        let stored = through_shim(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "data": {"a": "b"},
            "stringData": {"c": "d"}
        }));
        assert_eq!(stored["data"], json!({"a": "b"}));
        assert_eq!(stored["stringData"], json!({"c": "d"}));

        let patch = br#"{"stringData":{"c":"d"}}"#;
        assert_eq!(to_standin(Bytes::from_static(patch)), &patch[..]);
    }
}
