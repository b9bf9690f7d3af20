//! A loopback reverse proxy between the operator under test and the test API server.
//!
//! Why it exists: the test API server (apiextensions-apiserver) serves no `/api/v1`, and the
//! operator watches Secrets there. Requests are forwarded through a kube `Client` carrying
//! the tests' own Secret/ConfigMap shim ([`crate::core_standin`]), so the operator binary runs
//! unchanged. Being in the path anyway, the proxy also counts every request the operator makes,
//! by verb and resource: that is where "API requests and writes per Email" come from.
//!
//! It serves TLS with the test server's own certificate, so the operator pays for TLS as it
//! would against a real API server; the cost of the extra hop is measured separately (see
//! `ceilings::proxy_overhead`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::body::Body as AxumBody;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode, header};
use kube::Client;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// What one kind of request cost: how many, how many failed, and the time the upstream took.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tally {
    pub count: u64,
    /// Answers outside 2xx (409 on a claim shows up here, as the API server counts it).
    pub non_2xx: u64,
    /// Time to the upstream's response head (for watches: until the stream opened).
    pub upstream: Duration,
}

/// (verb, resource) -> tally. Verbs follow the API server's `apiserver_request_total`:
/// GET, LIST, WATCH, CREATE (POST), UPDATE (PUT), PATCH, APPLY (a PATCH with
/// `application/apply-patch+yaml`), DELETE, DELETECOLLECTION.
pub type Counts = BTreeMap<(String, String), Tally>;

pub const WRITE_VERBS: &[&str] = &[
    "CREATE",
    "UPDATE",
    "PATCH",
    "APPLY",
    "DELETE",
    "DELETECOLLECTION",
];

/// Total requests in `counts` whose verb satisfies `filter`.
pub fn total(counts: &Counts, filter: impl Fn(&str) -> bool) -> u64 {
    counts
        .iter()
        .filter(|((verb, _), _)| filter(verb))
        .map(|(_, t)| t.count)
        .sum()
}

pub fn is_write(verb: &str) -> bool {
    WRITE_VERBS.contains(&verb)
}

/// `after - before`, key by key (keys only in `after` count fully).
pub fn delta(after: &Counts, before: &Counts) -> Counts {
    after
        .iter()
        .filter_map(|(key, a)| {
            let b = before.get(key).copied().unwrap_or_default();
            let d = Tally {
                count: a.count - b.count,
                non_2xx: a.non_2xx - b.non_2xx,
                upstream: a.upstream.saturating_sub(b.upstream),
            };
            (d.count > 0).then(|| (key.clone(), d))
        })
        .collect()
}

struct Shared {
    upstream: Client,
    counts: Mutex<Counts>,
}

/// A running proxy; it stops with the process.
pub struct Proxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Starts on a free loopback port, serving TLS with `cert`/`key` (PEM).
    pub async fn start(upstream: Client, cert: &Path, key: &Path) -> anyhow::Result<Proxy> {
        let certs = CertificateDer::pem_file_iter(cert)
            .with_context(|| format!("reading {}", cert.display()))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("parsing {}", cert.display()))?;
        let key = PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("reading {}", key.display()))?;
        let mut tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .context("the proxy's TLS configuration")?;
        // kube speaks HTTP/1.1 only; saying so keeps ALPN honest.
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(tls));

        let tcp = TcpListener::bind("127.0.0.1:0").await?;
        let addr = tcp.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            counts: Mutex::default(),
        });
        let app = Router::new().fallback(forward).with_state(shared.clone());
        let listener = TlsListener::spawn(tcp, acceptor, addr);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("bench proxy stopped: {e}");
            }
        });
        Ok(Proxy { addr, shared })
    }

    pub fn counts(&self) -> Counts {
        self.shared.counts.lock().unwrap().clone()
    }
}

async fn forward(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let key = classify(&parts.method, &parts.uri, &parts.headers);
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let mut upstream_req = http::Request::builder().method(parts.method).uri(path);
    for (name, value) in &parts.headers {
        // Hop-by-hop headers and the ones hyper sets itself for the new connection.
        if name == header::HOST
            || name == header::CONNECTION
            || name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
        {
            continue;
        }
        upstream_req = upstream_req.header(name, value);
    }
    let upstream_req = match upstream_req.body(kube::client::Body::from(body)) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let started = Instant::now();
    let result = shared.upstream.send(upstream_req).await;
    let elapsed = started.elapsed();
    let ok = matches!(&result, Ok(r) if r.status().is_success());
    {
        let mut counts = shared.counts.lock().unwrap();
        let tally = counts.entry(key).or_default();
        tally.count += 1;
        tally.non_2xx += u64::from(!ok);
        tally.upstream += elapsed;
    }
    match result {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            parts.headers.remove(header::CONNECTION);
            parts.headers.remove(header::TRANSFER_ENCODING);
            parts.headers.remove(header::CONTENT_LENGTH);
            // Streams (watches) pass through as they arrive.
            Response::from_parts(parts, AxumBody::new(body))
        }
        Err(e) => (StatusCode::BAD_GATEWAY, format!("bench proxy: {e}")).into_response(),
    }
}

/// The (verb, resource[/subresource]) of an API request, e.g. ("APPLY", "emails/status").
pub fn classify(method: &Method, uri: &http::Uri, headers: &HeaderMap) -> (String, String) {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    // /api/v1/... or /apis/{group}/{version}/...
    let rest: &[&str] = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        other => other,
    };
    let rest = match rest {
        ["namespaces", _ns, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let (resource, name, sub) = match rest {
        [] => ("<discovery>".to_string(), None, None),
        [resource] => (resource.to_string(), None, None),
        [resource, name] => (resource.to_string(), Some(*name), None),
        [resource, name, sub, ..] => (resource.to_string(), Some(*name), Some(*sub)),
    };
    let resource = match sub {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource,
    };
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    let apply = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/apply-patch"));
    let verb = match *method {
        Method::GET if watch => "WATCH",
        Method::GET if name.is_some() => "GET",
        Method::GET => "LIST",
        Method::POST => "CREATE",
        Method::PUT => "UPDATE",
        Method::PATCH if apply => "APPLY",
        Method::PATCH => "PATCH",
        Method::DELETE if name.is_some() => "DELETE",
        Method::DELETE => "DELETECOLLECTION",
        _ => "OTHER",
    };
    (verb.to_string(), resource)
}

/// TLS handshakes run in their own tasks, so one slow client never holds up `accept`.
struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
}

impl TlsListener {
    fn spawn(tcp: TcpListener, acceptor: TlsAcceptor, addr: SocketAddr) -> TlsListener {
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = tcp.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                // Small API requests must not wait for delayed ACKs.
                let _ = stream.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(stream).await {
                        let _ = tx.send((tls, peer)).await;
                    }
                });
            }
        });
        TlsListener { ready, addr }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task never ends while the process runs; nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}
