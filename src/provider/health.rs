//! The outcome of a provider health check, as the sender controller writes it into the
//! `Healthy` condition.

use std::fmt;

/// Condition reasons (CamelCase, Kubernetes style) used by the health checks.
pub mod reason {
    pub const AUTH_FAILED: &str = "AuthFailed";
    pub const UNREACHABLE: &str = "Unreachable";
    pub const TIMEOUT: &str = "Timeout";
    pub const TLS_ERROR: &str = "TlsError";
    pub const STARTTLS_NOT_OFFERED: &str = "StartTLSNotOffered";
    pub const CHECK_NOT_PERMITTED: &str = "CheckNotPermitted";
    pub const DOMAIN_UNVERIFIED: &str = "DomainUnverified";
    pub const DOMAIN_DISABLED: &str = "DomainDisabled";
    pub const DOMAIN_NOT_FOUND: &str = "DomainNotFound";
    pub const QUOTA_EXHAUSTED: &str = "QuotaExhausted";
    pub const RATE_LIMITED: &str = "RateLimited";
    pub const PROVIDER_ERROR: &str = "ProviderError";
    pub const UNEXPECTED_RESPONSE: &str = "UnexpectedResponse";
}

/// The result of one health check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthReport {
    /// The provider accepted our credentials and would take mail.
    Healthy { message: String },
    /// The provider would not take mail from this config; `reason` says why.
    Unhealthy { reason: String, message: String },
    /// The check could not tell (e.g. a sending-only key may not read the domain).
    Unknown { reason: String, message: String },
}

impl HealthReport {
    pub fn healthy(message: impl Into<String>) -> Self {
        HealthReport::Healthy {
            message: message.into(),
        }
    }
    pub fn unhealthy(reason: &str, message: impl Into<String>) -> Self {
        HealthReport::Unhealthy {
            reason: reason.to_string(),
            message: message.into(),
        }
    }
    pub fn unknown(reason: &str, message: impl Into<String>) -> Self {
        HealthReport::Unknown {
            reason: reason.to_string(),
            message: message.into(),
        }
    }
    pub fn is_healthy(&self) -> bool {
        matches!(self, HealthReport::Healthy { .. })
    }
    /// `Healthy`, `Unhealthy` or `Unknown`.
    pub fn state(&self) -> &'static str {
        match self {
            HealthReport::Healthy { .. } => "Healthy",
            HealthReport::Unhealthy { .. } => "Unhealthy",
            HealthReport::Unknown { .. } => "Unknown",
        }
    }
    /// The condition reason; `Healthy` for a passed check.
    pub fn reason(&self) -> &str {
        match self {
            HealthReport::Healthy { .. } => "Healthy",
            HealthReport::Unhealthy { reason, .. } | HealthReport::Unknown { reason, .. } => reason,
        }
    }
    pub fn message(&self) -> &str {
        match self {
            HealthReport::Healthy { message }
            | HealthReport::Unhealthy { message, .. }
            | HealthReport::Unknown { message, .. } => message,
        }
    }
    pub(crate) fn map_message(self, f: impl FnOnce(String) -> String) -> Self {
        match self {
            HealthReport::Healthy { message } => HealthReport::Healthy {
                message: f(message),
            },
            HealthReport::Unhealthy { reason, message } => HealthReport::Unhealthy {
                reason,
                message: f(message),
            },
            HealthReport::Unknown { reason, message } => HealthReport::Unknown {
                reason,
                message: f(message),
            },
        }
    }
}

impl fmt::Display for HealthReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HealthReport::Healthy { message } => write!(f, "Healthy: {message}"),
            HealthReport::Unhealthy { reason, message } => {
                write!(f, "Unhealthy ({reason}): {message}")
            }
            HealthReport::Unknown { reason, message } => write!(f, "Unknown ({reason}): {message}"),
        }
    }
}
