//! kmailops: a Kubernetes operator that sends email declaratively, exactly once.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod crds;
pub mod manifests;
pub mod message;
pub mod provider;
