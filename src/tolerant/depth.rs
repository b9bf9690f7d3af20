//! Objects nested deeper than a JSON parser takes.
//!
//! The API server accepts objects nested thousands of levels deep in the free-form fields
//! (`variables`, `previewVariables`), but serde_json refuses documents deeper than 128 levels,
//! and kube parses a whole list page as one document: one such Email would fail every list of
//! Emails, so no Email in the cluster would be processed. [`DepthGuard`] sits between the
//! operator's client and the API server and looks at every answer about kmailops kinds before
//! kube parses it. A document whose nesting stays within bounds (nearly all of them: it costs
//! one pass over the bytes) passes unchanged. In one that does not, each object nested deeper
//! than [`MAX_DEPTH`] is replaced by its metadata and the annotation [`REJECTED`] saying where;
//! the typed parse then rejects it like any other object our types cannot read, and
//! `tolerant::report` names the field in its status.

use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::{StreamExt, stream};
use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::Value;
use tower::Service;

/// Objects may nest this deep (a list page adds two levels, a watch event one; serde_json
/// allows 128 in all).
pub const MAX_DEPTH: usize = 100;

/// Annotation on an object replaced by its metadata: what was too deep.
pub const REJECTED: &str = "kmailops.io/rejected";

/// Stack for the one parse that must go deeper than the default stack allows (the API server
/// accepts up to 10,000 levels).
const DEEP_STACK: usize = 256 * 1024 * 1024;

/// A `tower::Service` over a [`Client`] that guards its answers; build the operator's client
/// with `Client::new(DepthGuard::new(client), namespace)`.
#[derive(Clone)]
pub struct DepthGuard {
    client: Client,
}

impl DepthGuard {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// The client with its answers guarded.
    pub fn client(client: Client) -> Client {
        let namespace = client.default_namespace().to_string();
        Client::new(Self::new(client), namespace)
    }
}

impl Service<Request<Body>> for DepthGuard {
    type Response = Response<axum::body::Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let ours = req
            .uri()
            .path()
            .starts_with(&format!("/apis/{}/", crate::api::GROUP));
        let client = self.client.clone();
        Box::pin(async move {
            let response = client.send(req).await?;
            Ok(if ours {
                response.map(guarded)
            } else {
                response.map(axum::body::Body::new)
            })
        })
    }
}

/// The body, one line at a time: the API server writes compact JSON, so a newline only ever
/// ends a document (a GET or a list page is one line, a watch one event per line). Lines are
/// passed on as soon as they are complete, so a watch is not held back.
fn guarded<B>(body: B) -> axum::body::Body
where
    B: axum::body::HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    struct State {
        chunks: axum::body::BodyDataStream,
        pending: BytesMut,
        /// How much of `pending` is known to hold no newline: a list page arrives in many
        /// chunks, and searching it from the start after each would cost its size squared.
        searched: usize,
        done: bool,
    }
    let state = State {
        chunks: axum::body::Body::new(body).into_data_stream(),
        pending: BytesMut::new(),
        searched: 0,
        done: false,
    };
    let lines = stream::unfold(state, |mut st| async move {
        loop {
            // Never past the end, whatever path shrank the buffer: a panic here ends a watch.
            let from = st.searched.min(st.pending.len());
            if let Some(at) = memchr::memchr(b'\n', &st.pending[from..]) {
                let line = st.pending.split_to(from + at + 1).freeze();
                st.searched = 0;
                return Some((Ok::<_, axum::Error>(guard_document(line)), st));
            }
            st.searched = st.pending.len();
            if st.done {
                if st.pending.is_empty() {
                    return None;
                }
                let rest = st.pending.split().freeze();
                st.searched = 0;
                return Some((Ok(guard_document(rest)), st));
            }
            match st.chunks.next().await {
                Some(Ok(chunk)) => st.pending.extend_from_slice(&chunk),
                Some(Err(err)) => {
                    st.done = true;
                    st.pending.clear();
                    st.searched = 0;
                    return Some((Err(err), st));
                }
                None => st.done = true,
            }
        }
    });
    axum::body::Body::from_stream(lines)
}

/// The deepest nesting of objects and arrays in a JSON text (strings skipped).
///
/// Every answer about our kinds passes here, and most of its bytes are inside strings (names,
/// bodies, the managed fields' keys), so a string is skipped with `memchr` to its next quote
/// or backslash rather than byte by byte.
pub fn nesting(json: &[u8]) -> usize {
    let (mut depth, mut max, mut at) = (0usize, 0usize, 0usize);
    while let Some(&b) = json.get(at) {
        at += 1;
        match b {
            b'"' => loop {
                // An unterminated string: nothing after it is structure.
                let Some(rest) = json.get(at..) else {
                    return max;
                };
                match memchr::memchr2(b'"', b'\\', rest) {
                    None => return max,
                    // An escape: the next byte is part of the string, whatever it is.
                    Some(i) if rest[i] == b'\\' => at += i + 2,
                    Some(i) => {
                        at += i + 1;
                        break;
                    }
                }
            },
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// One document, with every too-deep object replaced (see the module docs).
pub fn guard_document(line: Bytes) -> Bytes {
    // A list page or a watch event puts objects at most two levels down.
    if nesting(&line) <= MAX_DEPTH + 2 {
        return line;
    }
    // Parse, rewrite and drop on a stack of its own: all three recurse as deep as the input.
    stacker::grow(DEEP_STACK, || rewrite(&line)).unwrap_or(line)
}

fn rewrite(line: &[u8]) -> Option<Bytes> {
    let mut de = serde_json::Deserializer::from_slice(line);
    de.disable_recursion_limit();
    let mut doc: Value = serde::Deserialize::deserialize(&mut de).ok()?;
    let trailing_newline = line.ends_with(b"\n");
    if let Some(items) = doc.get_mut("items").and_then(Value::as_array_mut) {
        items.iter_mut().for_each(replace_if_deep);
    } else if let Some(object) = doc.get_mut("object") {
        replace_if_deep(object);
    } else {
        replace_if_deep(&mut doc);
    }
    let mut out = serde_json::to_vec(&doc).ok()?;
    if trailing_newline {
        out.push(b'\n');
    }
    Some(Bytes::from(out))
}

fn replace_if_deep(object: &mut Value) {
    let Some(whole) = too_deep(object, MAX_DEPTH, &mut Vec::new()) else {
        return;
    };
    // Name the field the user wrote: managedFields mirror the spec's shape, so they are as
    // deep, but only the spec can be fixed.
    let path = ["spec", "status"]
        .iter()
        .find_map(|top| {
            let child = object.get(*top)?;
            too_deep(child, MAX_DEPTH - 1, &mut vec![top.to_string()])
        })
        .unwrap_or(whole);
    let mut meta = serde_json::Map::new();
    for key in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
    ] {
        if let Some(v) = object["metadata"].get(key) {
            meta.insert(key.into(), v.clone());
        }
    }
    let mut shown = String::new();
    for key in path.iter().take(3) {
        if !shown.is_empty() && !key.starts_with('[') {
            shown.push('.');
        }
        shown.push_str(key);
    }
    let note = format!(
        "{shown} nests deeper than {MAX_DEPTH} levels, which kmailops does not read: flatten it"
    );
    meta.insert("annotations".into(), serde_json::json!({ REJECTED: note }));
    let mut stub = serde_json::json!({
        "apiVersion": object.get("apiVersion").cloned().unwrap_or(Value::Null),
        "kind": object.get("kind").cloned().unwrap_or(Value::Null),
        "metadata": meta,
    });
    // The status is ours (the report of this very problem among it); kept when it is shallow.
    if let Some(status) = object.get("status")
        && too_deep(status, MAX_DEPTH - 1, &mut Vec::new()).is_none()
    {
        stub["status"] = status.clone();
    }
    *object = stub;
}

/// The path (keys, `[i]` for list items) to the first value below `limit` levels, if any.
fn too_deep(value: &Value, limit: usize, path: &mut Vec<String>) -> Option<Vec<String>> {
    if limit == 0 && (value.is_object() || value.is_array()) {
        return Some(path.clone());
    }
    let children: Vec<(String, &Value)> = match value {
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
        Value::Array(list) => list
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("[{i}]"), v))
            .collect(),
        _ => return None,
    };
    for (key, child) in children {
        path.push(key);
        let found = too_deep(child, limit.saturating_sub(1), path);
        path.pop();
        if found.is_some() {
            return found;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> Value {
        let mut v = serde_json::json!(1);
        for _ in 0..depth {
            v = serde_json::json!({ "a": v });
        }
        v
    }

    fn email(name: &str, variables: Value) -> Value {
        serde_json::json!({
            "apiVersion": "kmailops.io/v1alpha1", "kind": "Email",
            "metadata": {"name": name, "namespace": "shop", "uid": "u", "resourceVersion": "7"},
            "spec": {"to": ["a@example.org"], "subject": "s {\"[", "text": "t", "variables": variables},
        })
    }

    #[tokio::test]
    async fn lines_cut_anywhere_by_the_chunks_come_out_whole_and_in_order() {
        let object = serde_json::to_string(&email("fine", nested(3))).unwrap();
        let lines = [
            r#"{"type":"ADDED","object":{}}"#.to_string(),
            object,
            String::new(),
            r#"{"type":"BOOKMARK"}"#.to_string(),
        ];
        // The last line has no newline: the body's end ends it.
        let text = lines.join("\n");
        for size in [1, 2, 7, 64, text.len()] {
            let chunks: Vec<Result<Bytes, std::io::Error>> = text
                .as_bytes()
                .chunks(size)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            let body = axum::body::Body::from_stream(stream::iter(chunks));
            let out: Vec<Bytes> = guarded(body)
                .into_data_stream()
                .map(|frame| frame.unwrap())
                .collect()
                .await;
            let expected: Vec<String> = lines
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    if i + 1 < lines.len() {
                        format!("{l}\n")
                    } else {
                        l.clone()
                    }
                })
                .collect();
            let out: Vec<String> = out
                .iter()
                .map(|b| String::from_utf8(b.to_vec()).unwrap())
                .collect();
            assert_eq!(out, expected, "chunks of {size} bytes");
        }
    }

    #[test]
    fn nesting_counts_objects_and_arrays_but_not_brackets_in_strings() {
        assert_eq!(nesting(br#"{"a": "{{[[", "b": [1, {"c": []}]}"#), 4);
        assert_eq!(nesting(br#""\"{""#), 0);
    }

    /// The definition, one byte at a time: what [`nesting`] must agree with.
    fn nesting_bytewise(json: &[u8]) -> usize {
        let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
        for &b in json {
            if in_string {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => {
                    depth += 1;
                    max = max.max(depth);
                }
                b'}' | b']' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        max
    }

    proptest::proptest! {
        #[test]
        fn nesting_agrees_with_the_bytewise_definition_on_any_text(
            text in proptest::collection::vec(
                proptest::sample::select(b"{}[]\"\\a ".to_vec()), 0..200)
        ) {
            proptest::prop_assert_eq!(nesting(&text), nesting_bytewise(&text));
        }
    }

    #[test]
    fn a_shallow_page_passes_unchanged() {
        let page = serde_json::json!({"kind": "EmailList", "items": [email("a", nested(20))]});
        let bytes = Bytes::from(serde_json::to_vec(&page).unwrap());
        assert_eq!(guard_document(bytes.clone()), bytes);
    }

    #[test]
    fn a_page_with_one_deep_object_parses_and_names_what_was_too_deep() {
        // Built as text: a value this deep would overflow the test's own stack.
        let variables = "{\"a\":".repeat(5000) + "1" + &"}".repeat(5000);
        let deep = serde_json::to_string(&email("deep", serde_json::json!("VARS")))
            .unwrap()
            .replace("\"VARS\"", &variables);
        let fine = serde_json::to_string(&email("fine", nested(3))).unwrap();
        let page = format!(r#"{{"kind":"EmailList","items":[{deep},{fine}]}}"#) + "\n";
        let out = guard_document(Bytes::from(page));
        assert!(out.ends_with(b"\n"));
        let parsed: Value = serde_json::from_slice(&out).expect("parses with the default limit");
        let items = parsed["items"].as_array().unwrap();
        assert_eq!(items[0]["metadata"]["name"], "deep");
        assert!(items[0].get("spec").is_none());
        let note = items[0]["metadata"]["annotations"][REJECTED]
            .as_str()
            .unwrap();
        assert!(note.starts_with("spec.variables.a "), "{note}");
        assert_eq!(items[1], email("fine", nested(3)));
    }

    #[test]
    fn a_watch_event_with_a_deep_object_is_rewritten() {
        let event = format!(
            r#"{{"type":"ADDED","object":{}}}"#,
            serde_json::to_string(&email("deep", nested(300))).unwrap()
        );
        let out: Value = serde_json::from_slice(&guard_document(Bytes::from(event))).unwrap();
        assert_eq!(out["type"], "ADDED");
        assert!(out["object"]["metadata"]["annotations"][REJECTED].is_string());
    }
}
