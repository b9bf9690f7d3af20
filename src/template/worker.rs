//! The render worker: this same program, started by [`super::isolation`] with the hidden
//! command [`COMMAND`], rendering one request after another from its standard input.
//!
//! A worker caps its own memory before it reads anything, so a template that builds a huge
//! string (`'x' * 100000000`, `{% set s = s ~ s %}` in a loop: minijinja has no hook to bound
//! operators) fails an allocation inside the worker. A failed allocation aborts a Rust
//! process; here that is the worker, which the operator replaces, never the operator.
//!
//! # Protocol
//! Frames on the pipes: a 4-byte big-endian length, then that many bytes of JSON. The
//! operator sends [`ToWorker::Render`]; the worker answers with any number of
//! [`FromWorker::Source`] (a template it includes or extends), each answered with
//! [`ToWorker::Source`], then one [`FromWorker::Done`]. The operator resolves every source,
//! so what a render may read (admission, built-ins) is decided there, not in the worker.

use std::io::{self, Read, Write};
use std::process::ExitCode;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::{RenderError, reasons};
use super::library::Library;
use super::names::Part;
use super::render::{Variables, render_here};
use crate::api::{EmailTemplateSpec, TemplateErrorDetail};
use crate::message::RenderedContent;

/// The first argument that makes the program a render worker (not a user command: it is
/// not in `--help`).
pub const COMMAND: &str = "__render-worker";

/// Memory (data segment) one worker may use. Four workers at this limit plus the operator
/// itself (30-70 MiB) stay well under the Deployment's 512Mi. A legitimate render needs a few
/// MiB: strings a filter builds are capped at 4 MiB, output at 1 MiB.
pub const MEMORY_LIMIT_BYTES: u64 = 64 * 1024 * 1024;

/// Largest frame either side accepts: the request (an Email's variables and the template,
/// both bounded by the object size limit of the API server) and the answer (at most 2 MiB
/// of output, escaped in JSON).
pub const MAX_FRAME_BYTES: usize = 32 * 1024 * 1024;

/// What the operator sends.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToWorker {
    Render(Box<Request>),
    /// The answer to [`FromWorker::Source`]: `None` when the template does not exist or is
    /// not admitted (the two read the same).
    Source(Option<String>),
}

/// One call of [`super::render::render`].
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub namespace: String,
    pub name: String,
    pub spec: EmailTemplateSpec,
    pub given: Option<Variables>,
    pub wanted: Vec<Part>,
}

/// What the worker sends.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromWorker {
    /// The source of this joined name, please.
    Source(String),
    Done(Result<RenderedContent, WireError>),
}

/// A [`RenderError`] on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireError {
    reason: String,
    message: String,
    detail: TemplateErrorDetail,
}

impl From<RenderError> for WireError {
    fn from(e: RenderError) -> Self {
        Self {
            reason: e.reason.to_string(),
            message: e.message,
            detail: e.detail,
        }
    }
}

impl From<WireError> for RenderError {
    fn from(e: WireError) -> Self {
        let reason = [
            reasons::TEMPLATE_ERROR,
            reasons::MISSING_VARIABLES,
            reasons::RENDER_LIMIT,
        ]
        .into_iter()
        .find(|r| *r == e.reason)
        .unwrap_or(reasons::TEMPLATE_ERROR);
        RenderError {
            reason,
            message: e.message,
            detail: e.detail,
        }
    }
}

pub fn write_frame(out: &mut impl Write, message: &impl Serialize) -> io::Result<()> {
    write_body(out, &serde_json::to_vec(message)?)
}

/// [`write_frame`] of a message already serialized.
pub fn write_body(out: &mut impl Write, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|l| *l as usize <= MAX_FRAME_BYTES)
        .ok_or_else(|| io::Error::other("frame too large"))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(body);
    out.write_all(&frame)?;
    out.flush()
}

pub fn read_frame<T: DeserializeOwned>(input: &mut impl Read) -> io::Result<T> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::other("frame too large"));
    }
    let mut body = vec![0u8; len];
    input.read_exact(&mut body)?;
    Ok(serde_json::from_slice(&body)?)
}

/// Caps this process's memory. RLIMIT_DATA, not RLIMIT_AS: since Linux 4.7 the data limit
/// counts every private writable mapping (the heap and the anonymous mmaps that large
/// allocations get), which is exactly what a render allocates, while the address-space limit
/// also counts the mapped program itself (hundreds of MiB for a debug build, and whatever the
/// dynamic loader maps) and reserved-but-untouched regions, so it would be either too tight
/// for the program to start or too loose to protect anything.
fn cap_memory() -> io::Result<()> {
    use rustix::process::{Resource, Rlimit, setrlimit};
    setrlimit(
        Resource::Data,
        Rlimit {
            current: Some(MEMORY_LIMIT_BYTES),
            maximum: Some(MEMORY_LIMIT_BYTES),
        },
    )
    .map_err(io::Error::from)
}

/// The worker's main loop; returns when the operator closes the pipe.
pub fn serve() -> ExitCode {
    // Panics inside a render are caught and become errors; anything else must not print a
    // message that could hold template content (standard error is not read anyway).
    std::panic::set_hook(Box::new(|_| {}));
    if cap_memory().is_err() {
        // Never render without the cap: the operator sees the worker die and fails the render.
        return ExitCode::FAILURE;
    }
    exit_when_orphaned();
    loop {
        let request = match read_frame::<ToWorker>(&mut io::stdin().lock()) {
            Ok(ToWorker::Render(r)) => r,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return ExitCode::SUCCESS,
            Ok(ToWorker::Source(_)) | Err(_) => return ExitCode::FAILURE,
        };
        let result = render_here(
            &Library::asking(request.namespace, Arc::new(ask)),
            &request.name,
            &request.spec,
            request.given.as_ref(),
            &request.wanted,
        );
        let done = FromWorker::Done(result.map_err(WireError::from));
        if write_frame(&mut io::stdout().lock(), &done).is_err() {
            return ExitCode::FAILURE;
        }
    }
}

/// Ends this worker within half a second of its operator's end, even in the middle of a
/// render: an end of input is only seen between renders, and a render the operator gave up on
/// must not keep a CPU busy for a process that is gone (tests and CLI runs end while their
/// workers render). The parent-death signal cannot do this: it follows the spawning thread,
/// and blocking-pool threads come and go.
fn exit_when_orphaned() {
    let parent = rustix::process::getppid();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(std::time::Duration::from_millis(500));
            if rustix::process::getppid() != parent {
                std::process::exit(3);
            }
        }
    });
}

/// Asks the operator for a source. A broken pipe ends the worker: the operator is gone or
/// has given up on this render.
fn ask(name: &str) -> Option<String> {
    let answer = write_frame(&mut io::stdout().lock(), &FromWorker::Source(name.into()))
        .and_then(|()| read_frame::<ToWorker>(&mut io::stdin().lock()));
    match answer {
        Ok(ToWorker::Source(source)) => source,
        _ => std::process::exit(2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_oversized_ones_are_refused() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &FromWorker::Source("base/html".into())).unwrap();
        write_frame(&mut buf, &ToWorker::Source(None)).unwrap();
        let mut input = &buf[..];
        assert!(matches!(
            read_frame::<FromWorker>(&mut input).unwrap(),
            FromWorker::Source(n) if n == "base/html"
        ));
        assert!(matches!(
            read_frame::<ToWorker>(&mut input).unwrap(),
            ToWorker::Source(None)
        ));
        let too_large = ((MAX_FRAME_BYTES + 1) as u32).to_be_bytes();
        assert!(read_frame::<ToWorker>(&mut &too_large[..]).is_err());
    }

    #[test]
    fn errors_keep_their_reason_across_the_pipe() {
        let e = RenderError::new(
            reasons::RENDER_LIMIT,
            TemplateErrorDetail {
                message: "too many steps".into(),
                template: Some("t/text".into()),
                line: Some(2),
                column: None,
            },
        );
        let back = RenderError::from(WireError::from(e.clone()));
        assert_eq!(back, e);
    }
}
