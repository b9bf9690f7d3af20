//! The four kmailops kinds (group `kmailops.io`, version `v1alpha1`) and their shared types.
//! The CRD YAML under `crds/` is generated from these types (`kmailops crds`).

// kube-derive's repeated `printcolumn(type_ = ...)` arguments look like duplicated attributes
// to clippy; they are distinct columns.
#![allow(clippy::duplicated_attributes)]

pub mod common;
pub mod delivery;
pub mod email;
pub mod sender_config;
pub mod template;

pub use common::{AllowedNamespaces, NamespacesFrom, ObjectRef, Preview, SecretKeyRef};
pub use delivery::{DeliveryPhase, EmailDelivery, EmailDeliverySpec, EmailDeliveryStatus};
pub use email::{
    Attachment, Email, EmailPhase, EmailPreview, EmailSpec, EmailStatus, PreviewAttachment,
    ResendPolicy,
};
pub use sender_config::{
    EmailSenderConfig, EmailSenderConfigSpec, EmailSenderConfigStatus, ProviderKind,
};
pub use template::{
    EmailTemplate, EmailTemplateSpec, EmailTemplateStatus, TemplateErrorDetail, TemplateVariable,
};

/// The API group of every kmailops kind.
pub const GROUP: &str = "kmailops.io";
/// The API version of every kmailops kind.
pub const VERSION: &str = "v1alpha1";
/// Field manager for every write the operator makes (shown in `managedFields`).
pub const FIELD_MANAGER: &str = "kmailops-controller";
