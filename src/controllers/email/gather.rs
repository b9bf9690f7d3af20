//! Reads what a decision needs: the sender chain, the content and attachments, the message
//! through each sender, which sender can send now, and the ledger entries of the Email's name.
//! Credentials are loaded only to answer "can this sender send now"; nothing else needs them,
//! so a preview works before any sender is set up.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;

use crate::admission::admits;
use crate::api::{EmailPhase, EmailPreview};
use crate::ledger;
use crate::lookup::cluster::ClusterValues;
use crate::lookup::senders::{self, ResolvedSender};
use crate::lookup::{attachments, content, credentials};
use crate::message::{AttachmentData, OutgoingMessage, RenderedContent, build_message, preview};
use crate::problem::{Problem, reasons};
use crate::provider::Provider;
use crate::template::line::Ticket;

use super::Reconcile;
use super::decide::{Entry, Lookup, Readiness};

/// How long an Email waits for an unhealthy sender when no sender could be chosen to say.
const DEFAULT_SENDER_WAIT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// What gathering found.
pub(super) struct Gathered {
    /// The senders to try, in order; empty when none resolves.
    pub chain: Vec<ResolvedSender>,
    /// The message through each sender of the chain (`None` where it could not be built).
    pub messages: Vec<Option<OutgoingMessage>>,
    /// The sender that sends now, ready: the one `readiness.sender` names.
    pub ready: Option<Prepared>,
    pub readiness: Readiness,
    /// What `status.preview` shows; `None` when the content could not be rendered.
    pub preview: Option<EmailPreview>,
    /// The Secrets (credentials, attachments) and ConfigMaps read for this reconcile.
    pub values: ClusterValues,
}

/// One sender of the chain, ready to send.
pub(super) struct Prepared {
    /// Position in the chain.
    pub position: usize,
    pub sender: ResolvedSender,
    pub provider: Arc<dyn Provider>,
    pub message: OutgoingMessage,
}

impl Prepared {
    /// What this sender's provider can be asked before a send.
    pub fn lookup(&self) -> Lookup {
        Lookup::of(self.provider.recall(), &self.sender.config.spec.lookup)
    }
}

/// The sender chain of the Email, resolved from the caches: the first step of gathering, and
/// all that is needed to know whether a send would have to wait for a place in line.
pub(super) struct SenderChain {
    labels: senders::NamespaceLabels,
    chain: Result<senders::Chain, Problem>,
    /// How long the Email waits for its chosen sender if it is unhealthy with no usable
    /// fallback.
    sender_wait: std::time::Duration,
}

impl SenderChain {
    /// The key of the sender tried first, when the chain resolves.
    pub fn first_key(&self) -> Option<&str> {
        let chain = self.chain.as_ref().ok()?;
        chain.senders.first().map(|s| s.key.as_str())
    }
}

impl Reconcile<'_> {
    pub(super) async fn sender_chain(&self) -> Result<SenderChain, kube::Error> {
        let stores = &self.ctx.stores;
        let spec = &self.email.spec;
        let labels = if senders::needs_namespace_labels(&stores.senders, &self.namespace)
            || content::needs_namespace_labels(spec, &self.namespace, &stores.templates)
        {
            self.namespace_labels().await?
        } else {
            None
        };
        let admit = |config: &crate::api::EmailSenderConfig, owner: &str| {
            admits(
                &config.spec.allowed_namespaces,
                owner,
                &self.namespace,
                labels.as_ref(),
            )
        };
        let primary = senders::chosen(
            &self.namespace,
            spec.sender_config_ref.as_ref(),
            &stores.senders,
            &admit,
            &self.ctx.settings.shared_sender_namespaces,
        );
        let sender_wait = primary
            .as_ref()
            .map_or(DEFAULT_SENDER_WAIT, |p| p.spec.retry.max_duration());
        let chain = primary
            .and_then(|p| senders::usable_chain(p, &stores.senders, &self.namespace, &admit));
        Ok(SenderChain {
            labels,
            chain,
            sender_wait,
        })
    }

    /// `ticket` is the namespace's render place, held until the template is rendered.
    pub(super) async fn gather(
        &self,
        resolved: SenderChain,
        ticket: Option<Ticket>,
    ) -> Result<Gathered, kube::Error> {
        let stores = &self.ctx.stores;
        let spec = &self.email.spec;
        let SenderChain {
            labels,
            chain,
            sender_wait,
        } = resolved;
        // Everything the lookups below read: the attachments, and the credentials of every
        // sender in the chain (a fallback may be the one that sends).
        let mut values = ClusterValues::default();
        values
            .add_attachments(
                &stores.secrets,
                &self.ctx.client,
                &self.namespace,
                &spec.attachments,
            )
            .await?;
        if let Ok(chain) = &chain {
            for sender in &chain.senders {
                values
                    .add_sender(&stores.secrets, &sender.namespace, &sender.config.spec)
                    .await?;
            }
        }
        // An Email that names no template is copied, not rendered: no template code runs, so
        // it is not handed to the blocking pool (two thread switches and a copy of the whole
        // spec per reconcile).
        let content = if spec.template_ref.is_none() {
            content::literal(spec)
        } else {
            let (spec, namespace, templates, builtins, labels) = (
                spec.clone(),
                self.namespace.clone(),
                stores.templates.clone(),
                self.ctx.builtin_templates.clone(),
                labels.clone(),
            );
            let rendered = crate::template::sandbox::run(format!("Email {}", self.id), move || {
                content::render_for_email(&spec, &namespace, &templates, &builtins, &labels)
            })
            .await;
            drop(ticket);
            rendered
                .map_err(|e| Problem::new(e.reason, e.message))
                .and_then(|r| r)
        };
        let rendered = content.and_then(|c| {
            Ok((
                c,
                attachments::load(&self.namespace, &spec.attachments, &values)?,
            ))
        });
        Ok(self.assemble(chain, rendered, values, sender_wait))
    }

    /// The pure part of gathering: messages, hashes, the sender that can send now, the
    /// preview.
    fn assemble(
        &self,
        chain: Result<senders::Chain, Problem>,
        rendered: Result<(RenderedContent, Vec<AttachmentData>), Problem>,
        values: ClusterValues,
        sender_wait: std::time::Duration,
    ) -> Gathered {
        let (chain, chain_problem) = match chain {
            Ok(c) => (c.senders, None),
            Err(p) => (Vec::new(), Some(p)),
        };
        let (content, attached) = match rendered {
            Ok(r) => r,
            Err(problem) => {
                return Gathered {
                    chain,
                    messages: Vec::new(),
                    ready: None,
                    readiness: Readiness {
                        content: Some(problem.clone()),
                        hashes: Vec::new(),
                        sender: Err(chain_problem.unwrap_or(problem)),
                        sender_wait,
                        ready_hash: None,
                        lookup: Lookup::Off,
                        lookups: Vec::new(),
                    },
                    preview: None,
                    values,
                };
            }
        };
        let messages: Vec<Result<OutgoingMessage, Problem>> = chain
            .iter()
            .map(|s| self.message_for(s, &content, &attached))
            .collect();
        let mut hashes: Vec<String> = messages
            .iter()
            .flatten()
            .map(|m| m.delivery_hash.clone())
            .collect();
        // A Sent Email is judged against the sender it went out through, also when that
        // sender is no longer in the chain (disabled or unhealthy since).
        if let Some(extra) = self.sent_through_hash(&chain, &content, &attached) {
            hashes.push(extra);
        }
        // Every sender of the chain refuses the message (addresses, headers, sizes): that is
        // the Email's own problem.
        let content_problem = match messages.as_slice() {
            [] => None,
            all if all.iter().all(Result::is_err) => all[0].clone().err(),
            _ => None,
        };
        let first = messages.iter().position(Result::is_ok);
        let preview = match first {
            Some(i) => messages[i]
                .as_ref()
                .ok()
                .map(|m| preview::of(m, &chain[i].key)),
            None if content_problem.is_none() => Some(preview::without_sender(
                &content,
                &self.email.spec.to,
                &self.email.spec.cc,
                &self.email.spec.bcc,
                &attached,
            )),
            None => None,
        };
        let messages: Vec<Option<OutgoingMessage>> = messages.into_iter().map(Result::ok).collect();
        // Known from each config alone: a sender whose client can not be built now may still
        // have sent the message before (and then its look-up fails, which waits).
        let lookups = chain
            .iter()
            .zip(&messages)
            .map(|(s, m)| match (m, s.config.spec.provider_kind()) {
                (Some(_), Some(kind)) => {
                    Lookup::of(crate::provider::Recall::of(kind), &s.config.spec.lookup)
                }
                _ => Lookup::Off,
            })
            .collect();
        let mut gathered = Gathered {
            chain,
            messages,
            ready: None,
            readiness: Readiness {
                content: content_problem,
                hashes,
                sender: Err(Problem::new(reasons::SENDER_UNAVAILABLE, "")),
                sender_wait,
                ready_hash: None,
                lookup: Lookup::Off,
                lookups,
            },
            preview,
            values,
        };
        let sender = match chain_problem {
            Some(p) => Err(p),
            None => self.prepare_from(&gathered, 0),
        };
        gathered.readiness.sender = match sender {
            Ok(p) => {
                let position = p.position;
                gathered.readiness.ready_hash = Some(p.message.delivery_hash.clone());
                gathered.readiness.lookup = p.lookup();
                gathered.ready = Some(p);
                Ok(position)
            }
            Err(p) => Err(p),
        };
        gathered
    }

    fn message_for(
        &self,
        sender: &ResolvedSender,
        content: &RenderedContent,
        attached: &[AttachmentData],
    ) -> Result<OutgoingMessage, Problem> {
        let message = build_message(
            &self.email.spec,
            &sender.config.spec,
            &sender.key,
            content.clone(),
            attached.to_vec(),
        )
        .map_err(|e| Problem::new(reasons::INVALID_SPEC, e.to_string()))?;
        // The same for every attempt of this delivery, and computable from Git alone:
        // providers that deduplicate (Resend's Idempotency-Key) drop a repeat, never a
        // different Email with equal content.
        let token = super::decide::token_in_effect(&self.facts());
        Ok(message.for_delivery(&self.namespace, &self.name, token.as_deref()))
    }

    fn sent_through_hash(
        &self,
        chain: &[ResolvedSender],
        content: &RenderedContent,
        attached: &[AttachmentData],
    ) -> Option<String> {
        if self.status.phase != Some(EmailPhase::Sent) {
            return None;
        }
        let key = self.status.sender_config.as_deref()?;
        if chain.iter().any(|c| c.key == key) {
            return None;
        }
        let (ns, name) = key.split_once('/')?;
        let config = crate::lookup::Senders::sender(&self.ctx.stores.senders, ns, name)?;
        let sender = ResolvedSender::of(config);
        self.message_for(&sender, content, attached)
            .ok()
            .map(|m| m.delivery_hash)
    }

    /// The first sender from `start` on that can send now: its message built, its credentials
    /// loaded and its client ready. A sender with a missing Secret is passed over when a later
    /// one can send; with none left, the first problem is the answer.
    pub(super) fn prepare_from(&self, g: &Gathered, start: usize) -> Result<Prepared, Problem> {
        let mut first_problem = None;
        for position in start..g.chain.len() {
            match self.prepare_at(g, position) {
                None => continue,
                Some(Ok(prepared)) => return Ok(prepared),
                Some(Err(p)) => {
                    first_problem.get_or_insert(p);
                }
            }
        }
        Err(first_problem.unwrap_or_else(|| {
            Problem::new(
                reasons::SENDER_UNAVAILABLE,
                "every sender of this Email failed: see the EmailDeliveries of this Email",
            )
        }))
    }

    /// The sender at `position` of the chain, ready to send or be asked; `None` when the
    /// message can not go through it at all.
    pub(super) fn prepare_at(
        &self,
        g: &Gathered,
        position: usize,
    ) -> Option<Result<Prepared, Problem>> {
        let values = &g.values;
        let sender = g.chain.get(position)?;
        let message = g.messages.get(position).cloned().flatten()?;
        let allowed = self
            .ctx
            .settings
            .allowed_endpoints
            .check(&sender.config.spec);
        let client = allowed
            .map_err(|e| {
                Problem::new(
                    reasons::SENDER_INVALID,
                    format!("EmailSenderConfig {}: {e}", sender.key),
                )
            })
            .and_then(|()| {
                credentials::load(&sender.config.spec, &sender.namespace, values)
                    .map_err(|e| Problem::new(e.reason(), e.to_string()))
            })
            .and_then(|loaded| {
                self.ctx
                    .providers
                    .get(&sender.key, &sender.config.spec, loaded)
                    .map_err(|e| {
                        Problem::new(
                            reasons::SENDER_INVALID,
                            format!("EmailSenderConfig {}: {e}", sender.key),
                        )
                    })
            });
        Some(client.map(|provider| Prepared {
            position,
            sender: sender.clone(),
            provider,
            message,
        }))
    }

    async fn namespace_labels(&self) -> Result<senders::NamespaceLabels, kube::Error> {
        let api: Api<Namespace> = Api::all(self.ctx.client.clone());
        match api.get_opt(&self.namespace).await {
            Ok(ns) => Ok(ns.and_then(|n| n.metadata.labels)),
            // Without read access to namespaces a selector simply admits nothing.
            Err(kube::Error::Api(s)) if s.code == 403 || s.code == 404 => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The ledger entries of this Email's name, when a decision may need them: the Email does
    /// not say Sent or Unknown itself, and the cache knows entries of its name. Read from the
    /// API server, which is authoritative; a new Email (no entries) costs no request.
    ///
    /// The cache shows every entry but those made in the last moments (the watch's lag); an
    /// entry that is missing here is still guarded by the claim's atomic create.
    pub(super) async fn ledger_entries(
        &self,
        ready: &Readiness,
    ) -> Result<Vec<Entry>, kube::Error> {
        if !super::decide::reads_ledger(&self.facts(), ready)
            || !self
                .ctx
                .stores
                .ledger
                .has_entries_for(&self.namespace, &self.name)
        {
            return Ok(Vec::new());
        }
        let entries = ledger::list_for_email(&self.deliveries, &self.name).await?;
        Ok(entries
            .iter()
            .map(|e| Entry {
                name: kube::ResourceExt::name_any(e),
                hash: e.spec.delivery_hash.clone(),
                token: kube::ResourceExt::annotations(e)
                    .get(ledger::RETRY_TOKEN)
                    .cloned(),
                state: ledger::state(e),
            })
            .collect())
    }
}
