//! Memory and CPU of a process, from /proc (Linux only, like the test server itself).

use std::sync::OnceLock;

/// Clock ticks per second for /proc/<pid>/stat times (`getconf CLK_TCK`, 100 on Linux).
fn ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// User plus system CPU seconds the process has used so far; `None` once it is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    times_from_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// CPU seconds of the process and its children (the operator's render workers): its own
/// time, the time of children it has reaped, and that of the children still running.
pub fn cpu_seconds_with_children(pid: u32) -> Option<f64> {
    let own_stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let own = times_from_stat(&own_stat)?;
    let reaped = children_times_from_stat(&own_stat).unwrap_or(0.0);
    let mut live = 0.0;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        if parent_from_stat(&stat) == Some(pid) {
            live += times_from_stat(&stat).unwrap_or(0.0);
        }
    }
    Some(own + reaped + live)
}

/// The parent pid (field 4) of a `stat` line.
fn parent_from_stat(stat: &str) -> Option<u32> {
    let after_comm = &stat[stat.rfind(')')? + 2..];
    after_comm.split_whitespace().nth(1)?.parse().ok()
}

/// cutime + cstime (fields 16 and 17): the children the process has waited for.
fn children_times_from_stat(stat: &str) -> Option<f64> {
    let after_comm = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let cutime: f64 = fields.get(13)?.parse().ok()?;
    let cstime: f64 = fields.get(14)?.parse().ok()?;
    Some((cutime + cstime) / ticks_per_second())
}

/// utime + stime of a `stat` line (of a process or a thread), in seconds.
fn times_from_stat(stat: &str) -> Option<f64> {
    // The command name (field 2) may contain spaces and parentheses: count from its end.
    let after_comm = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_second())
}

/// When the process started, to the clock tick: its start (field 22, ticks after boot) set
/// against the time since boot now (/proc/stat's `btime` is whole seconds only).
pub fn started_at(pid: u32) -> Option<std::time::SystemTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    let ticks: f64 = after_comm.split_whitespace().nth(19)?.parse().ok()?;
    let now = std::time::SystemTime::now();
    let uptime_s: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let since_start = (uptime_s - ticks / ticks_per_second()).max(0.0);
    now.checked_sub(std::time::Duration::from_secs_f64(since_start))
}

/// A `VmXxx:` line of /proc/<pid>/status, in MiB.
fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Peak resident memory (VmHWM) in MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    status_mib(pid, "VmHWM:")
}

/// Current resident memory (VmRSS) in MiB.
pub fn rss_mib(pid: u32) -> Option<f64> {
    status_mib(pid, "VmRSS:")
}

/// The 1-minute load average: the machine is shared, so runs record how busy it was.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// All cores' ticks so far by kind, from the first line of /proc/stat: user nice system
/// idle iowait irq softirq steal (and more on newer kernels).
fn machine_fields() -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    Some(
        line.split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect(),
    )
}

/// Busy and total CPU time of the whole machine so far (all cores, in clock ticks): whether a
/// run was short of CPU or waiting on something else.
pub fn machine_ticks() -> Option<(u64, u64)> {
    let fields = machine_fields()?;
    // Idle and iowait are not busy.
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// The share of the ticks between two (part, total) readings that went to the part, e.g. from
/// [`machine_ticks`] or [`steal_ticks`]; NaN when either reading failed or no tick passed.
pub fn share_between(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> f64 {
    match (before, after) {
        (Some((p0, t0)), Some((p1, t1))) if t1 > t0 => (p1 - p0) as f64 / (t1 - t0) as f64,
        _ => f64::NAN,
    }
}

/// Ticks the hypervisor gave to others (steal) and the total, all cores, so far.
pub fn steal_ticks() -> Option<(u64, u64)> {
    let fields = machine_fields()?;
    Some((*fields.get(7)?, fields.iter().take(8).sum()))
}

/// CPU time the calling thread has used so far, nanoseconds. The thread's CPU clock, not its
/// schedstat: the kernel brings schedstat up to date only at a tick or a switch, so a short
/// piece of work read through it mostly shows 0.
pub fn thread_cpu_ns() -> Option<u64> {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Some(u64::try_from(ts.tv_sec).ok()? * 1_000_000_000 + u64::try_from(ts.tv_nsec).ok()?)
}

/// CPU seconds used so far by this process's threads whose name starts with `prefix`.
pub fn threads_cpu_seconds(prefix: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    tasks
        .filter_map(Result::ok)
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|name| name.starts_with(prefix))
        })
        .filter_map(|t| {
            let tid: u32 = t.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
            times_from_stat(&stat)
        })
        .sum()
}
