//! The EmailSenderConfig reconciler: validate -> load credentials -> build the client ->
//! health-check when due -> status.
//!
//! Conditions: `Ready` (spec valid and credentials loaded; reason `Disabled` when
//! `disabled: true`; never moved by the provider's health), `CredentialsLoaded`, `Healthy`
//! (last check passed; Unknown when the check cannot tell), and `InsecureTransport` as a
//! standing warning for `tls: None` or `insecureSkipVerify`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};

use crate::api::FIELD_MANAGER;
use crate::api::sender_config::{MIN_HEALTH_INTERVAL, MIN_UNHEALTHY_INTERVAL, SmtpTls};
use crate::api::{EmailSenderConfig, EmailSenderConfigSpec, EmailSenderConfigStatus};
use crate::backoff::parse_duration;
use crate::conditions::{self, Desired, Status, types};
use crate::context::Context;
use crate::lookup::cluster::ClusterValues;
use crate::lookup::credentials;
use crate::lookup::senders::missing_fallbacks;
use crate::metrics::{HealthCheckLabels, SenderOnly};
use crate::provider::HealthReport;

/// Condition types of a sender beyond the kstatus ones.
pub mod condition_types {
    pub const HEALTHY: &str = "Healthy";
    pub const CREDENTIALS_LOADED: &str = "CredentialsLoaded";
    pub const INSECURE_TRANSPORT: &str = "InsecureTransport";
}

/// Ready=False reason: `spec.fallback` names a config that does not exist.
pub const FALLBACK_NOT_FOUND: &str = "FallbackNotFound";
/// Ready=False reason: the spec is wrong in a way the CRD schema cannot tell.
pub const INVALID_CONFIG: &str = "InvalidConfig";
/// A field names a host outside the operator's `--allowed-endpoint` list.
pub const ENDPOINT_NOT_ALLOWED: &str = "EndpointNotAllowed";
/// Ready=True reason (and Healthy=Unknown reason) of a sender with `disabled: true`.
pub const DISABLED: &str = "Disabled";
const DISABLED_MESSAGE: &str =
    "spec.disabled is true: nothing is sent through this config; Emails use its fallbacks";
use condition_types::{CREDENTIALS_LOADED, HEALTHY, INSECURE_TRANSPORT};

#[derive(Debug, thiserror::Error)]
#[error("reconciling EmailSenderConfig {object}: {source}")]
pub struct Error {
    object: String,
    #[source]
    source: kube::Error,
}

/// Reconciles one EmailSenderConfig.
pub async fn reconcile(sender: Arc<EmailSenderConfig>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = sender.namespace().unwrap_or_default();
    let key = format!("{ns}/{}", sender.name_any());
    let started = Instant::now();
    let result = run(&sender, &ctx, &ns, &key).await;
    ctx.metrics
        .observe_reconcile("EmailSenderConfig", started.elapsed());
    result.map_err(|source| {
        ctx.metrics.reconcile_error("EmailSenderConfig", "KubeApi");
        Error {
            object: key,
            source,
        }
    })
}

async fn run(
    sender: &EmailSenderConfig,
    ctx: &Context,
    ns: &str,
    key: &str,
) -> Result<Action, kube::Error> {
    let spec = &sender.spec;
    ctx.metrics
        .sender_configured(key, spec.provider_kind().map(|p| p.as_str()), spec.disabled);
    let previous = sender.status.clone().unwrap_or_default();
    let mut desired: Vec<Desired> = Vec::new();
    let mut status = EmailSenderConfigStatus {
        provider: spec.provider_kind(),
        ..previous.clone()
    };

    // Validate what the CRD schema cannot: durations that parse, sane fallbacks.
    let invalid = validate(spec, sender.name_any().as_str());
    // Hosts the operator is not allowed to contact: no client, no health check, no send.
    let endpoint = ctx.settings.allowed_endpoints.check(spec).err();

    // Credentials and the client.
    let mut values = ClusterValues::default();
    values.add_sender(&ctx.stores.secrets, ns, spec).await?;
    let loaded = credentials::load(spec, ns, &values);
    desired.push(match &loaded {
        Ok(_) => Desired::new(
            CREDENTIALS_LOADED,
            Status::True,
            "Loaded",
            "credentials loaded from the Secret",
        ),
        Err(e) => Desired::new(CREDENTIALS_LOADED, Status::False, e.reason(), e.to_string()),
    });
    let provider = match (&invalid, loaded) {
        _ if endpoint.is_some() => Err((
            ENDPOINT_NOT_ALLOWED,
            endpoint
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
        )),
        (None, Ok(l)) => match ctx.providers.get(key, spec, l) {
            Ok(p) => Ok(p),
            Err(e) => Err((INVALID_CONFIG, e.to_string())),
        },
        (Some(msg), _) => Err((INVALID_CONFIG, msg.clone())),
        (None, Err(e)) => Err((e.reason(), e.to_string())),
    };
    // A fallback that names nothing is the config's own error, also when it can send:
    // an outage of this sender would find no fallback where its author expects one.
    let missing = missing_fallbacks(sender, &ctx.stores.senders);
    let provider = match provider {
        Ok(_) if !missing.is_empty() => Err((
            FALLBACK_NOT_FOUND,
            format!(
                "spec.fallback names {} that do not exist in namespace {ns}: create them, or remove them from spec.fallback",
                missing.join(", ")
            ),
        )),
        other => other,
    };

    // Ready is about the object, never the provider's health: a valid spec with its
    // credentials loaded is Ready whether or not the provider answers (that is `Healthy`), so
    // an outage never holds a Flux or Argo CD sync. A disabled sender is in its desired state:
    // Ready, reason Disabled, unless its spec itself is wrong.
    desired.push(match (&provider, spec.disabled) {
        (Err((reason, msg)), _)
            if [FALLBACK_NOT_FOUND, INVALID_CONFIG, ENDPOINT_NOT_ALLOWED].contains(reason) =>
        {
            Desired::new(types::READY, Status::False, *reason, msg.clone())
        }
        (Ok(_), true) => Desired::new(types::READY, Status::True, DISABLED, DISABLED_MESSAGE),
        (Err((_, msg)), true) => Desired::new(
            types::READY,
            Status::True,
            DISABLED,
            format!("{DISABLED_MESSAGE}; before enabling it, fix: {msg}"),
        ),
        (Ok(_), false) => Desired::new(types::READY, Status::True, "Ready", "ready to send"),
        (Err((reason, msg)), false) => {
            Desired::new(types::READY, Status::False, *reason, msg.clone())
        }
    });

    // A standing warning for settings that weaken transport security.
    let insecure = insecure_transport(spec);
    let was_insecure = conditions::find(&previous.conditions, INSECURE_TRANSPORT)
        .is_some_and(|c| c.status == "True");
    desired.push(match &insecure {
        Some((reason, msg)) => Desired::new(INSECURE_TRANSPORT, Status::True, *reason, msg.clone()),
        None => Desired::new(
            INSECURE_TRANSPORT,
            Status::False,
            "Verified",
            "TLS is required and the server certificate is verified",
        ),
    });

    // Health: checked when due, or at once when the client changed (new spec or Secret).
    let now = Timestamp::now();
    let healthy_now = conditions::find(&previous.conditions, HEALTHY).map(|c| c.status.clone());
    let interval = check_interval(spec, healthy_now.as_deref() == Some("True"));
    let mut next_check = interval;
    let gauge = ctx.metrics.sender_status(key);
    match (&provider, spec.disabled) {
        (_, true) => {
            gauge.set(-1);
            desired.push(Desired::new(
                HEALTHY,
                Status::Unknown,
                DISABLED,
                "not checked while disabled",
            ));
        }
        (Err((reason, msg)), false) => {
            gauge.set(0);
            desired.push(Desired::new(
                HEALTHY,
                Status::Unknown,
                *reason,
                format!("not checked: {msg}"),
            ));
        }
        (Ok(p), false) => {
            let last = previous.last_health_check_time.as_ref().map(|t| t.0);
            let client_changed = ctx.note_checked_client(key, p);
            let due = client_changed
                || previous.observed_generation != sender.metadata.generation
                || last.is_none_or(|t| elapsed(t, now) >= interval);
            if due {
                let timeout =
                    parse_duration(&spec.health_check.timeout).unwrap_or(Duration::from_secs(10));
                let started = Instant::now();
                let report = p.check_health(timeout).await;
                ctx.metrics
                    .health_check_duration
                    .get_or_create(&SenderOnly {
                        sender: key.to_string(),
                    })
                    .observe(started.elapsed().as_secs_f64());
                ctx.metrics
                    .health_checks
                    .get_or_create(&HealthCheckLabels {
                        sender: key.to_string(),
                        result: report.state().to_string(),
                    })
                    .inc();
                gauge.set(i64::from(report.is_healthy()));
                status.last_health_check_time = Some(Time(now));
                next_check = check_interval(spec, report.is_healthy());
                desired.push(health_condition(&report));
            } else {
                gauge.set(i64::from(healthy_now.as_deref() == Some("True")));
                // Keep the standing Healthy condition as it is.
                if let Some(c) = conditions::find(&previous.conditions, HEALTHY) {
                    desired.push(Desired::new(
                        HEALTHY,
                        match c.status.as_str() {
                            "True" => Status::True,
                            "False" => Status::False,
                            _ => Status::Unknown,
                        },
                        c.reason.clone(),
                        c.message.clone(),
                    ));
                }
                let since = last.map(|t| elapsed(t, now)).unwrap_or_default();
                next_check = interval.saturating_sub(since);
            }
        }
    }

    if let Some(activity) = ctx.sender_activity(key) {
        status.last_send_time = Some(Time(activity.time));
        status.last_send_error = activity.error;
    }
    status.observed_generation = sender.metadata.generation;
    status.conditions = conditions::merge(
        &previous.conditions,
        desired,
        sender.metadata.generation,
        &Time(now),
    );

    if sender.status.as_ref() != Some(&status) {
        let api: Api<EmailSenderConfig> = Api::namespaced(ctx.client.clone(), ns);
        let body = serde_json::json!({
            "apiVersion": "kmailops.io/v1alpha1",
            "kind": "EmailSenderConfig",
            "status": status,
        });
        api.patch_status(
            &sender.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
    }
    if let Some((reason, msg)) = insecure
        && !was_insecure
    {
        let ev = Event {
            type_: EventType::Warning,
            reason: reason.to_string(),
            note: Some(msg),
            action: "Validate".into(),
            secondary: None,
        };
        if let Err(e) = ctx.events.publish(&ev, &sender.object_ref(&())).await {
            tracing::warn!(sender = key, error = %e, "could not publish Event");
        }
    }
    Ok(Action::requeue(next_check.max(Duration::from_secs(1))))
}

fn elapsed(since: Timestamp, now: Timestamp) -> Duration {
    (now - since).try_into().unwrap_or_default()
}

/// The schema holds the floors; they are applied here too for objects stored before it did.
fn check_interval(spec: &EmailSenderConfigSpec, healthy: bool) -> Duration {
    let (raw, fallback, floor) = if healthy {
        (&spec.health_check.interval, 300, MIN_HEALTH_INTERVAL)
    } else {
        (
            &spec.health_check.unhealthy_interval,
            30,
            MIN_UNHEALTHY_INTERVAL,
        )
    };
    parse_duration(raw)
        .unwrap_or(Duration::from_secs(fallback))
        .max(floor)
}

fn health_condition(report: &HealthReport) -> Desired {
    match report {
        HealthReport::Healthy { message } => {
            Desired::new(HEALTHY, Status::True, "CheckPassed", message.clone())
        }
        HealthReport::Unhealthy { reason, message } => {
            Desired::new(HEALTHY, Status::False, reason.clone(), message.clone())
        }
        HealthReport::Unknown { reason, message } => {
            Desired::new(HEALTHY, Status::Unknown, reason.clone(), message.clone())
        }
    }
}

/// What the schema cannot check. `None` when valid.
fn validate(spec: &EmailSenderConfigSpec, own_name: &str) -> Option<String> {
    if spec.provider_kind().is_none() {
        return Some(
            "exactly one of spec.mailersend, spec.mailgun, spec.smtp, spec.ses, spec.sendgrid, spec.postmark or spec.resend must be set".into(),
        );
    }
    let durations = [
        ("spec.retry.initialBackoff", &spec.retry.initial_backoff),
        ("spec.retry.maxBackoff", &spec.retry.max_backoff),
        ("spec.healthCheck.interval", &spec.health_check.interval),
        (
            "spec.healthCheck.unhealthyInterval",
            &spec.health_check.unhealthy_interval,
        ),
        ("spec.healthCheck.timeout", &spec.health_check.timeout),
    ];
    for (field, value) in durations {
        if parse_duration(value).is_none() {
            return Some(format!(
                "{field}: '{value}' is not a duration; use e.g. 30s, 5m or 1h"
            ));
        }
    }
    if spec.fallback.iter().any(|f| f == own_name) {
        return Some(
            "spec.fallback lists this config itself: list other EmailSenderConfigs".into(),
        );
    }
    None
}

fn insecure_transport(spec: &EmailSenderConfigSpec) -> Option<(&'static str, String)> {
    let smtp = spec.smtp.as_ref()?;
    if smtp.tls == SmtpTls::None {
        Some((
            "PlaintextSmtp",
            "smtp.tls is None: mail and credentials travel unencrypted; use StartTLS or TLS outside local development".into(),
        ))
    } else if smtp.insecure_skip_verify {
        Some((
            "TlsVerificationDisabled",
            "smtp.insecureSkipVerify is true: any server certificate is accepted; set smtp.caBundle instead".into(),
        ))
    } else {
        None
    }
}

/// The senders a Secret feeds, for waking them when it changes.
pub fn senders_using_secret(
    senders: &kube::runtime::reflector::Store<EmailSenderConfig>,
    ns: &str,
    secret_name: &str,
) -> Vec<ObjectRef<EmailSenderConfig>> {
    senders
        .state()
        .iter()
        .filter(|s| s.namespace().as_deref() == Some(ns))
        .filter(|s| {
            crate::provider::required_secrets(&s.spec)
                .iter()
                .any(|(_, r)| r.name == secret_name)
        })
        .map(|s| ObjectRef::from_obj(&**s))
        .collect()
}

/// What the Email controller reads of a sender: its spec, its retry token, and whether it
/// is ready and healthy. Emails waiting on senders are looked at again only when this
/// changes, not on every status write (a health check's time, the last send): with many
/// Emails waiting, waking all of them per status write would let one busy sender keep the
/// controller busy for everyone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenByEmails {
    generation: Option<i64>,
    retry_token: Option<String>,
    ready: Option<String>,
    healthy: Option<String>,
}

impl SeenByEmails {
    pub fn of(sender: &EmailSenderConfig) -> Self {
        let condition = |type_: &str| {
            sender
                .status
                .as_ref()
                .and_then(|s| conditions::find(&s.conditions, type_))
                .map(|c| c.status.clone())
        };
        SeenByEmails {
            generation: sender.metadata.generation,
            retry_token: sender
                .annotations()
                .get(crate::controllers::email::RETRY_ANNOTATION)
                .cloned(),
            ready: condition(types::READY),
            healthy: condition(HEALTHY),
        }
    }
}

/// The configs of `changed`'s namespace whose `spec.fallback` names it.
pub fn senders_falling_back_to(
    senders: &kube::runtime::reflector::Store<EmailSenderConfig>,
    changed: &EmailSenderConfig,
) -> Vec<ObjectRef<EmailSenderConfig>> {
    let (ns, name) = (changed.namespace(), changed.name_any());
    senders
        .state()
        .iter()
        .filter(|s| s.namespace() == ns && s.spec.fallback.contains(&name))
        .map(|s| ObjectRef::from_obj(&**s))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> EmailSenderConfigSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn plaintext_smtp_and_skipped_verification_are_flagged_and_verified_tls_is_not() {
        let plain = spec("sender: {address: a@b.c}\nsmtp: {host: mail, tls: None}");
        assert_eq!(
            insecure_transport(&plain).map(|w| w.0),
            Some("PlaintextSmtp")
        );
        let skip = spec("sender: {address: a@b.c}\nsmtp: {host: mail, insecureSkipVerify: true}");
        assert_eq!(
            insecure_transport(&skip).map(|w| w.0),
            Some("TlsVerificationDisabled")
        );
        let ok = spec("sender: {address: a@b.c}\nsmtp: {host: mail}");
        assert_eq!(insecure_transport(&ok), None);
    }

    #[test]
    fn a_config_that_falls_back_to_itself_or_has_a_bad_duration_is_invalid() {
        let own = spec("sender: {address: a@b.c}\nsmtp: {host: mail}\nfallback: [me]");
        assert!(validate(&own, "me").unwrap().contains("spec.fallback"));
        let bad =
            spec("sender: {address: a@b.c}\nsmtp: {host: mail}\nretry: {initialBackoff: soon}");
        assert!(
            validate(&bad, "me")
                .unwrap()
                .contains("spec.retry.initialBackoff")
        );
    }
}
