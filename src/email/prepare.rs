//! Steps without side effects: the sender chain, attachments and content (`plan`), then
//! per sender its client and the message it would send (`prepare_from`).

use kube::Api;

use k8s_openapi::api::core::v1::Namespace;

use crate::message::{OutgoingMessage, build_message};
use crate::sender::credentials;

use super::problem::{Problem, reasons as problem_reasons};
use super::resolve::{self, ResolvedSender};
use super::{Plan, Prepared, Reconcile, attachments, content};

impl Reconcile<'_> {
    /// The senders and the message inputs; no side effects.
    pub(super) async fn plan(&self) -> Result<Result<Plan, Problem>, kube::Error> {
        let stores = &self.ctx.stores;
        let labels = if resolve::needs_namespace_labels(&stores.senders, &self.namespace)
            || content::needs_namespace_labels(&self.email.spec, &self.namespace, &stores.templates)
        {
            self.namespace_labels().await?
        } else {
            None
        };
        let chain = match resolve::resolve(
            &self.namespace,
            self.email.spec.sender_config_ref.as_ref(),
            &stores.senders,
            &labels,
        ) {
            Ok(c) => c,
            Err(p) => return Ok(Err(p)),
        };
        let attachments = match attachments::load(
            &self.namespace,
            &self.email.spec.attachments,
            &stores.secrets,
            &self.ctx.client,
        )
        .await?
        {
            Ok(a) => a,
            Err(p) => return Ok(Err(p)),
        };
        let content = match content::render_for_email(
            &self.email.spec,
            &self.namespace,
            &stores.templates,
            &self.ctx.builtin_templates,
            &labels,
        ) {
            Ok(c) => c,
            Err(p) => return Ok(Err(p)),
        };
        Ok(Ok(Plan {
            chain,
            content,
            attachments,
        }))
    }

    /// The message as `sender` would send it.
    pub(super) fn message_for(
        &self,
        plan: &Plan,
        sender: &ResolvedSender,
    ) -> Result<OutgoingMessage, Problem> {
        build_message(
            &self.email.spec,
            &sender.config.spec,
            &sender.key,
            plan.content.clone(),
            plan.attachments.clone(),
        )
        .map_err(|e| Problem::new(problem_reasons::INVALID_SPEC, e.to_string()))
    }

    /// The first sender from `start` on whose credentials and client are in order. A sender
    /// with a missing Secret is passed over when a later one can send; with none left, its
    /// problem is the answer.
    pub(super) fn prepare_from(&self, plan: &Plan, start: usize) -> Result<Prepared, Problem> {
        let mut first_problem = None;
        for (position, sender) in plan.chain.iter().enumerate().skip(start) {
            let message = self.message_for(plan, sender)?;
            let client = credentials::load(
                &sender.config.spec,
                &sender.namespace,
                &self.ctx.stores.secrets,
            )
            .map_err(|e| Problem::new(e.reason(), e.to_string()))
            .and_then(|loaded| {
                self.ctx
                    .providers
                    .get(&sender.key, &sender.config.spec, loaded)
                    .map_err(|e| {
                        Problem::new(
                            problem_reasons::SENDER_INVALID,
                            format!("EmailSenderConfig {}: {e}", sender.key),
                        )
                    })
            });
            match client {
                Ok(provider) => {
                    return Ok(Prepared {
                        position,
                        sender: sender.clone(),
                        provider,
                        message,
                    });
                }
                Err(p) => {
                    first_problem.get_or_insert(p);
                }
            }
        }
        Err(first_problem.unwrap_or_else(|| {
            Problem::new(
                problem_reasons::SENDER_UNAVAILABLE,
                "every sender of this Email failed: see the EmailDeliveries of this Email",
            )
        }))
    }

    pub(super) async fn namespace_labels(&self) -> Result<resolve::NamespaceLabels, kube::Error> {
        let api: Api<Namespace> = Api::all(self.ctx.client.clone());
        match api.get_opt(&self.namespace).await {
            Ok(ns) => Ok(ns.and_then(|n| n.metadata.labels)),
            // Without read access to namespaces a selector simply admits nothing.
            Err(kube::Error::Api(s)) if s.code == 403 || s.code == 404 => Ok(None),
            Err(e) => Err(e),
        }
    }
}
