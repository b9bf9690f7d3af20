//! A loopback HTTP proxy in front of the test API server that sends every request through a
//! given client, i.e. through the Secret/ConfigMap stand-in shim: a program that talks to it
//! (the `kmailops` binary) sees an API server with Secrets. Plain HTTP on loopback: the
//! upstream hop, with TLS and the client certificate, is the client's.
//!
//! Used by process-level tests and by `tools/testenv` (scripts/demo.sh).

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
    let app = axum::Router::new().fallback(forward).with_state(client);
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

async fn forward(State(client): State<Client>, req: Request) -> Response {
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
