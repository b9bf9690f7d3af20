//! kmailops: a Kubernetes operator that sends email declaratively, exactly once.
#![forbid(unsafe_code)]

pub mod admission;
pub mod api;
pub mod backoff;
pub mod cli;
pub mod conditions;
pub mod context;
pub mod controllers;
pub mod crds;
pub mod endpoints;
pub mod events;
pub mod leader;
pub mod ledger;
pub mod lookup;
pub mod manifests;
pub mod message;
pub mod metrics;
pub mod problem;
pub mod provider;
pub mod rate_limit;
pub mod runtime;
pub mod send_slots;
pub mod store_ready;
pub mod telemetry;
pub mod template;
pub mod tolerant;
