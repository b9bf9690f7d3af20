//! EmailSenderConfig support shared by the controllers: loading credentials from Secrets and
//! keeping one provider client per sender.

pub mod clients;
pub mod controller;
pub mod credentials;
pub mod rate_limit;
