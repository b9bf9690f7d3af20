//! Where a render runs: in this process, or in one of a few long-lived worker processes (this
//! same program, see [`super::worker`]) whose memory is capped.
//!
//! minijinja bounds steps and depth, and our filters bound the strings they build, but its
//! operators do not: `'x' * 100000000` and `{% set s = s ~ s %}` ask for gigabytes within a
//! handful of steps, and a failed allocation aborts a Rust process. In a worker that is the
//! worker's end; the operator turns it into an error naming the limit and starts another
//! worker for the next render. A render past its wall-clock budget has its worker killed, so
//! nothing keeps burning a CPU after the caller gave up.
//!
//! The `kmailops` binary always renders in workers ([`choose`] in `main`, for the operator and
//! every CLI command). Renders run in-process only where that is chosen explicitly: tests and
//! benches that link the library, whose own program is not `kmailops` (the library's unit
//! tests need not choose). A program that chose nothing gets errors, not unbounded renders.

use std::io::{self, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::error::{RenderError, reasons};
use super::library::Library;
use super::limits::{MAX_CONCURRENT_RENDERS, RENDER_BUDGET};
use super::names::Part;
use super::overruns::{MAX_SOURCES, Overruns};
use super::render::Variables;
use super::worker::{self, FromWorker, MEMORY_LIMIT_BYTES, Request, ToWorker};
use crate::api::{EmailTemplateSpec, TemplateErrorDetail};
use crate::message::RenderedContent;

/// How renders are isolated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// In the calling thread. No memory bound beyond the template limits: for tests and
    /// benches of the library only.
    InProcess,
    /// In up to [`MAX_CONCURRENT_RENDERS`] worker processes running `program`
    /// ([`super::worker::COMMAND`]), each with [`MEMORY_LIMIT_BYTES`] of memory.
    Workers { program: PathBuf },
}

/// The choice of this process; `None` until [`choose`] is called.
static CHOSEN: OnceLock<Chosen> = OnceLock::new();

enum Chosen {
    InProcess,
    Workers(Pool),
}

/// Chooses how every render of this process runs, once, before the first render. A later
/// call changes nothing.
pub fn choose(isolation: Isolation) {
    let _ = CHOSEN.get_or_init(|| match isolation {
        Isolation::InProcess => Chosen::InProcess,
        Isolation::Workers { program } => {
            Chosen::Workers(Pool::new(program, MAX_CONCURRENT_RENDERS))
        }
    });
}

/// The program to run as a worker: this one. `/proc/self/exe` still names the running
/// program after its file was replaced on disk (an upgrade in place).
pub fn this_program() -> io::Result<PathBuf> {
    let proc = PathBuf::from("/proc/self/exe");
    if proc.exists() {
        Ok(proc)
    } else {
        std::env::current_exe()
    }
}

/// Whether renders run in workers (then the worker enforces [`RENDER_BUDGET`] itself).
pub fn in_workers() -> bool {
    matches!(CHOSEN.get(), Some(Chosen::Workers(_)))
}

/// Where the next render runs.
pub(super) enum Place {
    Here,
    Worker(&'static Pool),
}

/// Where renders run: as chosen; in the library's own unit tests in-process unless chosen
/// otherwise. A program that never chose gets an error for every render instead of an
/// unbounded one.
pub(super) fn place() -> Result<Place, RenderError> {
    match CHOSEN.get() {
        Some(Chosen::Workers(pool)) => Ok(Place::Worker(pool)),
        Some(Chosen::InProcess) => Ok(Place::Here),
        None if cfg!(test) => Ok(Place::Here),
        None => Err(RenderError::new(
            reasons::TEMPLATE_ERROR,
            TemplateErrorDetail {
                message: "renders are not set up in this program (kmailops::template::isolation::choose was never called)".into(),
                ..Default::default()
            },
        )),
    }
}

/// Long-lived workers, reused render after render (a spawn costs milliseconds; a round trip
/// to a waiting worker, well under one). Workers start on first use and again after one died
/// or was killed.
pub struct Pool {
    program: PathBuf,
    size: usize,
    /// Renders that cost a worker, not rendered again with the same inputs.
    overruns: Overruns,
    state: Mutex<State>,
    freed: Condvar,
}

struct State {
    idle: Vec<Worker>,
    /// Workers alive: idle or rendering.
    live: usize,
}

struct Worker {
    child: Child,
    input: ChildStdin,
    output: ChildStdout,
}

/// How a render in a worker went wrong.
enum Failure {
    /// Past [`RENDER_BUDGET`]: the worker was killed.
    Budget,
    /// The worker ended (or was ended) in the middle of the render.
    Died(std::process::ExitStatus),
    /// No worker could be started.
    Spawn,
    /// The request could not be encoded for a worker.
    Request,
}

impl Pool {
    fn new(program: PathBuf, size: usize) -> Self {
        Self {
            program,
            size: size.max(1),
            overruns: Overruns::new(),
            state: Mutex::new(State {
                idle: Vec::new(),
                live: 0,
            }),
            freed: Condvar::new(),
        }
    }

    /// Renders in a worker; blocks the calling thread (the blocking pool in the operator) for
    /// at most [`RENDER_BUDGET`] once a worker is free. Sources the template includes or
    /// extends are read from `library`, here.
    pub(super) fn render(
        &self,
        library: &Library,
        name: &str,
        spec: &EmailTemplateSpec,
        given: Option<&Variables>,
        wanted: &[Part],
    ) -> Result<RenderedContent, RenderError> {
        let request = ToWorker::Render(Box::new(Request {
            namespace: library.namespace().to_string(),
            name: name.to_string(),
            spec: spec.clone(),
            given: given.cloned(),
            wanted: wanted.to_vec(),
        }));
        let fail = |failure: Failure| failure_error(name, failure);
        let body = serde_json::to_vec(&request).map_err(|_| fail(Failure::Request))?;
        let key = self.overruns.request(&body);
        if let Some(known) = self
            .overruns
            .known(key, Instant::now(), |n| library.source(n))
        {
            return Err(known);
        }
        let mut w = self.checkout().map_err(|_| fail(Failure::Spawn))?;
        let deadline = Instant::now() + RENDER_BUDGET;
        // What the worker read, each source hashed as it is sent: an edit of an include during
        // the render must not be taken for what the render read.
        let mut read = Vec::new();
        let mut note = |name: String, source: Option<&str>| {
            if read.len() <= MAX_SOURCES {
                read.push((name, self.overruns.source(source)));
            }
        };
        match exchange(&mut w, library, &body, deadline, &mut note) {
            Ok(done) => {
                self.checkin(w);
                done.map_err(RenderError::from)
            }
            Err(e) => {
                let overran = e.kind() == io::ErrorKind::TimedOut;
                let status = self.discard(w, overran);
                let costly = overran || ran_out_of_memory(status);
                let error = fail(if overran {
                    Failure::Budget
                } else {
                    Failure::Died(status)
                });
                if costly {
                    self.overruns
                        .remember(key, read, error.clone(), Instant::now());
                }
                Err(error)
            }
        }
    }

    fn checkout(&self) -> io::Result<Worker> {
        let mut state = self.lock();
        loop {
            while let Some(mut w) = state.idle.pop() {
                if matches!(w.child.try_wait(), Ok(None)) {
                    return Ok(w);
                }
                // Died while idle (killed from outside): reaped, replaced below.
                let _ = w.child.kill();
                let _ = w.child.wait();
                state.live -= 1;
            }
            if state.live < self.size {
                state.live += 1;
                drop(state);
                return self.spawn().inspect_err(|_| {
                    self.lock().live -= 1;
                    self.freed.notify_one();
                });
            }
            state = self
                .freed
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// No parent-death signal (PR_SET_PDEATHSIG): it fires when the spawning *thread* ends, and
    /// blocking-pool threads come and go while their workers serve others. A worker whose
    /// operator is gone reads the end of its input and exits.
    fn spawn(&self) -> io::Result<Worker> {
        let mut child = Command::new(&self.program)
            .arg(worker::COMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // Nothing a worker could print belongs in the operator's log.
            .stderr(Stdio::null())
            .spawn()?;
        let (Some(input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("worker without pipes"));
        };
        Ok(Worker {
            child,
            input,
            output,
        })
    }

    fn checkin(&self, w: Worker) {
        self.lock().idle.push(w);
        self.freed.notify_one();
    }

    /// Ends a worker that failed a render and returns how it ended: killed at once when it
    /// overran its budget, otherwise given a moment to finish dying (its exit status says why).
    fn discard(&self, mut w: Worker, overran: bool) -> std::process::ExitStatus {
        drop(w.input);
        if !overran {
            let until = Instant::now() + Duration::from_secs(1);
            while Instant::now() < until {
                if let Ok(Some(status)) = w.child.try_wait() {
                    self.release();
                    return status;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let _ = w.child.kill();
        let status = w.child.wait();
        self.release();
        // A wait that fails leaves nothing to learn: report it as killed (raw status 9).
        status.unwrap_or_else(|_| std::process::ExitStatus::from_raw(9))
    }

    fn release(&self) {
        self.lock().live -= 1;
        self.freed.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One request (serialized) and its answer; every source the worker asks for is read from
/// `library` and shown to `note`.
fn exchange(
    w: &mut Worker,
    library: &Library,
    request: &[u8],
    deadline: Instant,
    note: &mut impl FnMut(String, Option<&str>),
) -> io::Result<Result<RenderedContent, worker::WireError>> {
    worker::write_body(&mut w.input, request)?;
    loop {
        let mut output = Deadlined {
            pipe: &mut w.output,
            deadline,
        };
        match worker::read_frame::<FromWorker>(&mut output)? {
            FromWorker::Source(name) => {
                let source = library.source(&name);
                note(name, source.as_deref());
                worker::write_frame(&mut w.input, &ToWorker::Source(source))?;
            }
            FromWorker::Done(result) => return Ok(result),
        }
    }
}

/// Reads that fail with `TimedOut` once `deadline` has passed.
struct Deadlined<'a> {
    pipe: &'a mut ChildStdout,
    deadline: Instant,
}

impl Read for Deadlined<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            let timeout = Timespec {
                tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: i64::from(left.subsec_nanos()),
            };
            let mut fds = [PollFd::new(&*self.pipe, PollFlags::IN)];
            match poll(&mut fds, Some(&timeout)) {
                Ok(0) => continue,
                Ok(_) => return self.pipe.read(buf),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The error a failed worker render becomes. Names the limit, never the template's content.
fn failure_error(name: &str, failure: Failure) -> RenderError {
    let (reason, message) = match failure {
        Failure::Budget => (
            reasons::RENDER_LIMIT,
            format!(
                "rendering took longer than {}s; look for a loop over large strings",
                RENDER_BUDGET.as_secs()
            ),
        ),
        Failure::Died(status) if ran_out_of_memory(status) => (
            reasons::TEMPLATE_ERROR,
            format!(
                "rendering stopped: the render exceeded the memory limit of {} MiB a template may use; look for a string repeated (`*`) or joined to itself (`~`) in a loop",
                MEMORY_LIMIT_BYTES / (1024 * 1024)
            ),
        ),
        Failure::Died(_) => (
            reasons::TEMPLATE_ERROR,
            "the renderer failed on this template; simplify the template".to_string(),
        ),
        Failure::Spawn => (
            reasons::TEMPLATE_ERROR,
            "no render worker could be started; the operator will retry".to_string(),
        ),
        Failure::Request => (
            reasons::TEMPLATE_ERROR,
            "the render request could not be encoded; look for variables that are not JSON"
                .to_string(),
        ),
    };
    RenderError::new(
        reason,
        TemplateErrorDetail {
            message,
            template: Some(name.to_string()),
            ..Default::default()
        },
    )
}

/// A failed allocation aborts (SIGABRT); the kernel's OOM killer, and nothing else we know
/// of, sends SIGKILL to a worker the operator did not kill itself.
fn ran_out_of_memory(status: std::process::ExitStatus) -> bool {
    matches!(status.signal(), Some(6 | 9))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of_signal(signal: i32) -> std::process::ExitStatus {
        std::process::ExitStatus::from_raw(signal)
    }

    #[test]
    fn a_worker_failure_names_the_limit_it_hit() {
        let table = [
            (Failure::Budget, reasons::RENDER_LIMIT, "longer than 10s"),
            (
                Failure::Died(status_of_signal(6)),
                reasons::TEMPLATE_ERROR,
                "memory limit of 64 MiB",
            ),
            (
                Failure::Died(status_of_signal(9)),
                reasons::TEMPLATE_ERROR,
                "memory limit of 64 MiB",
            ),
            (
                Failure::Died(status_of_signal(11)),
                reasons::TEMPLATE_ERROR,
                "the renderer failed",
            ),
            (
                Failure::Died(std::process::ExitStatus::from_raw(2 << 8)),
                reasons::TEMPLATE_ERROR,
                "the renderer failed",
            ),
            (Failure::Spawn, reasons::TEMPLATE_ERROR, "no render worker"),
            (
                Failure::Request,
                reasons::TEMPLATE_ERROR,
                "could not be encoded",
            ),
        ];
        for (failure, reason, says) in table {
            let e = failure_error("welcome", failure);
            assert_eq!(e.reason, reason);
            assert!(e.message.starts_with("welcome: "), "{}", e.message);
            assert!(e.message.contains(says), "{}", e.message);
        }
    }
}
