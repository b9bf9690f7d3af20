//! kmailops: a Kubernetes operator that sends email declaratively, exactly once.
#![forbid(unsafe_code)]

pub mod admission;
pub mod api;
pub mod cli;
pub mod conditions;
pub mod context;
pub mod controller;
pub mod crds;
pub mod email;
pub mod events;
pub mod leader;
pub mod manifests;
pub mod message;
pub mod metrics;
pub mod provider;
pub mod sender;
pub mod telemetry;
pub mod template;
