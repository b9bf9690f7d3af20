//! Paired rounds (`PAIRS=R`): instead of the whole bench, R sets of rounds back to back, each
//! a protocol round from the bench's process, one from a process of its own, and the
//! operator end to end (and a second operator binary, `KMAILOPS_BIN_B`, when given). The
//! order inside a set alternates from set to set.
//!
//! Why: on this machine two rounds of the same work a few minutes apart differ by up to a
//! third, so one run's ratio says more about the hour than about a change. Rounds next to each
//! other share the hour; the median of their ratios over several sets is what a change should
//! be judged by. The protocol round from its own process pays what the operator pays for being
//! a process of its own (waking it, its runtime, crossing to the proxy); if the operator's
//! ratio to it is no better than to the in-process round, that cost is not where the gap is.

use std::future::Future;

use serde_json::json;

use crate::protocol::{self, ChildRequest, ProtocolRound, Setup};
use crate::{EndToEnd, Settings};

/// One set's figures.
struct Set {
    in_process: ProtocolRound,
    own_process: ProtocolRound,
    /// (label, round) per operator binary: "A" is `KMAILOPS_BIN`, "B" `KMAILOPS_BIN_B`.
    e2e: Vec<(&'static str, EndToEnd)>,
}

pub async fn run<F, Fut>(
    s: &Settings,
    setup: &Setup<'_>,
    child: &ChildRequest,
    e2e: F,
) -> anyhow::Result<()>
where
    F: Fn(&Settings, usize) -> Fut,
    Fut: Future<Output = anyhow::Result<EndToEnd>>,
{
    let b = s.operator_bin_b.as_ref().map(|bin| Settings {
        operator_bin: bin.clone(),
        ..s.clone()
    });
    let mut sets = Vec::new();
    for i in 0..s.pairs {
        let flip = i % 2 == 1;
        eprintln!("[bench] paired set {} of {}", i + 1, s.pairs);
        let (in_process, own_process) = if flip {
            let own = protocol::round_in_own_process(child).await?;
            (protocol::round(setup, false).await?, own)
        } else {
            let here = protocol::round(setup, false).await?;
            (here, protocol::round_in_own_process(child).await?)
        };
        let mut operators: Vec<(&'static str, &Settings)> = vec![("A", s)];
        if let Some(b) = &b {
            operators.push(("B", b));
            if flip {
                operators.reverse();
            }
        }
        let mut rounds = Vec::new();
        for (label, settings) in operators {
            // Log names operator-e2e-11.log, -12.log, ... (A) and -21.log, ... (B).
            let log = if label == "A" { 11 + i } else { 21 + i };
            rounds.push((label, e2e(settings, log).await?));
        }
        rounds.sort_by_key(|(label, _)| *label);
        let set = Set {
            in_process,
            own_process,
            e2e: rounds,
        };
        print_set(s, i, &set);
        sets.push(set);
    }
    summarize(s, &sets)
}

fn print_set(s: &Settings, i: usize, set: &Set) {
    println!(
        "set {}: protocol {:.1} Emails/s in the bench's process, {:.1} from its own (API server + etcd {:.1}, {:.1} ms/Email; speed probe {:.0}, {:.0} us)",
        i + 1,
        set.in_process.per_s,
        set.own_process.per_s,
        set.in_process.server_cpu_ms_per_email,
        set.own_process.server_cpu_ms_per_email,
        set.in_process.speed.unit_us,
        set.own_process.speed.unit_us
    );
    for (label, e) in &set.e2e {
        println!(
            "  operator {label}: {:.1} Emails/s, ratio {:.2} / {:.2} (in-process / own-process protocol); API server + etcd {:.1} ms/Email, operator {:.2} ms/Email, {:.2} reconciles/Email; speed probe {:.0} us",
            e.emails_per_s,
            e.emails_per_s / set.in_process.per_s,
            e.emails_per_s / set.own_process.per_s,
            e.server_cpu_ms_per_email(s.n),
            e.operator_cpu_ms_per_email(s.n),
            e.reconciles_per_email,
            e.speed.unit_us
        );
    }
}

/// The middle value (the mean of the two middle ones for an even count); NaN for none.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn summarize(s: &Settings, sets: &[Set]) -> anyhow::Result<()> {
    let mut json_sets = Vec::new();
    for set in sets {
        json_sets.push(json!({
            "protocol_per_s": set.in_process.per_s,
            "protocol_own_process_per_s": set.own_process.per_s,
            "protocol_server_cpu_ms_per_email": set.in_process.server_cpu_ms_per_email,
            "protocol_own_process_server_cpu_ms_per_email": set.own_process.server_cpu_ms_per_email,
            "protocol_probe_unit_us": set.in_process.speed.unit_us,
            "protocol_own_process_probe_unit_us": set.own_process.speed.unit_us,
            "e2e": set.e2e.iter().map(|(label, e)| json!({
                "operator": label,
                "emails_per_s": e.emails_per_s,
                "server_cpu_ms_per_email": e.server_cpu_ms_per_email(s.n),
                "operator_cpu_ms_per_email": e.operator_cpu_ms_per_email(s.n),
                "reconciles_per_email": e.reconciles_per_email,
                "probe_unit_us": e.speed.unit_us,
            })).collect::<Vec<_>>(),
        }));
    }
    let mut medians = serde_json::Map::new();
    for label in ["A", "B"] {
        let ratios = |own: bool| {
            sets.iter()
                .filter_map(|set| {
                    let (_, e) = set.e2e.iter().find(|(l, _)| *l == label)?;
                    let limit = if own {
                        &set.own_process
                    } else {
                        &set.in_process
                    };
                    Some(e.emails_per_s / limit.per_s)
                })
                .collect::<Vec<_>>()
        };
        let (here, own) = (ratios(false), ratios(true));
        if here.is_empty() {
            continue;
        }
        let (here, own) = (median(here), median(own));
        println!(
            "operator {label}: median ratio over {} sets {here:.2} to the in-process protocol, {own:.2} to the own-process one",
            sets.len()
        );
        medians.insert(
            label.to_string(),
            json!({"ratio_to_protocol": here, "ratio_to_protocol_own_process": own}),
        );
    }
    let path = s.out.join("pairs.json");
    let report = json!({
        "n": s.n,
        "busy_cores": s.busy_cores,
        "sets": json_sets,
        "median": medians,
    });
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    eprintln!("[bench] wrote {}", path.display());
    Ok(())
}
