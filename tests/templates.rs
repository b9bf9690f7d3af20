//! EmailTemplates end to end: the EmailTemplate controller and templated Emails against the
//! real API server (operator in-process, MailerSend mock counting sends), and `kmailops
//! render` / `kmailops validate` through the binary.

mod support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use support::operator::{Operator, WAIT, deliveries, phase_is, ready_reason, setup};
use support::{TestEnv, wait_for};

use kmailops::api::{Email, EmailPhase, EmailTemplate};
use kmailops::context::Settings;

fn template_yaml(name: &str, subject: &str, text: &str, html: &str) -> String {
    format!(
        r#"
apiVersion: kmailops.io/v1alpha1
kind: EmailTemplate
metadata:
  name: {name}
spec:
  subject: {subject:?}
  text: {text:?}
  html: {html:?}
  variables:
    - {{name: name, required: true}}
  previewVariables:
    name: "Ada <3"
"#
    )
}

fn templated_email(name: &str, template: &str, person: &str, dry_run: bool) -> String {
    let annotations = if dry_run {
        "\n  annotations:\n    kmailops.io/dry-run: \"true\""
    } else {
        ""
    };
    format!(
        r#"
apiVersion: kmailops.io/v1alpha1
kind: Email
metadata:
  name: {name}{annotations}
spec:
  to: ["{person} <{}@example.org>"]
  templateRef: {{name: {template}}}
  variables: {{name: "{person}"}}
"#,
        person.to_lowercase()
    )
}

fn template_ready(t: &EmailTemplate) -> Option<(String, String)> {
    t.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| (c.status.clone(), c.reason.clone()))
}

fn template_preview(t: &EmailTemplate, part: &str) -> Option<String> {
    let p = t.status.as_ref()?.preview.as_ref()?;
    match part {
        "subject" => p.subject.clone(),
        "text" => p.text.clone(),
        _ => p.html.clone(),
    }
}

fn email_preview_subject(e: &Email) -> Option<String> {
    e.status.as_ref()?.preview.as_ref()?.subject.clone()
}

#[tokio::test]
async fn a_template_change_updates_its_preview_and_a_dry_run_email_but_never_resends_a_sent_email()
{
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "tpl-change").await;
    let client = env.client();
    let templates: Api<EmailTemplate> = Api::namespaced(client.clone(), &ns);
    let emails: Api<Email> = Api::namespaced(client.clone(), &ns);
    let op = Operator::start(client.clone(), &ns);

    env.apply_yaml(
        &ns,
        &template_yaml(
            "greet",
            "Hi {{ name }}",
            "Hello {{ name }}",
            "<p>Hello {{ name }}</p>",
        ),
    )
    .await;
    let t = wait_for(
        &templates,
        "greet",
        |t| template_preview(t, "subject").as_deref() == Some("Hi Ada <3"),
        WAIT,
    )
    .await;
    assert_eq!(template_ready(&t), Some(("True".into(), "Rendered".into())));
    assert_eq!(
        t.status.as_ref().unwrap().observed_generation,
        t.metadata.generation
    );
    // Escaped in html, as written in text.
    assert_eq!(
        template_preview(&t, "html").as_deref(),
        Some("<p>Hello Ada &lt;3</p>")
    );
    assert_eq!(
        template_preview(&t, "text").as_deref(),
        Some("Hello Ada <3")
    );

    env.apply_yaml(&ns, &templated_email("sent-one", "greet", "Bob", false))
        .await;
    wait_for(&emails, "sent-one", phase_is(EmailPhase::Sent), WAIT).await;
    assert_eq!(mock.calls(), 1);
    assert_eq!(mock.bodies()[0]["subject"], "Hi Bob");
    assert_eq!(mock.bodies()[0]["html"], "<p>Hello Bob</p>");

    env.apply_yaml(&ns, &templated_email("draft", "greet", "Carol", true))
        .await;
    let draft = wait_for(&emails, "draft", phase_is(EmailPhase::Previewed), WAIT).await;
    assert_eq!(email_preview_subject(&draft).as_deref(), Some("Hi Carol"));
    let sent_before = emails.get("sent-one").await.unwrap();

    env.apply_yaml(
        &ns,
        &template_yaml(
            "greet",
            "Hello again {{ name }}",
            "Hello {{ name }}",
            "<p>Hello {{ name }}</p>",
        ),
    )
    .await;
    wait_for(
        &templates,
        "greet",
        |t| template_preview(t, "subject").as_deref() == Some("Hello again Ada <3"),
        WAIT,
    )
    .await;
    let draft = wait_for(
        &emails,
        "draft",
        |e| email_preview_subject(e).as_deref() == Some("Hello again Carol"),
        WAIT,
    )
    .await;
    assert_eq!(draft.status.unwrap().phase, Some(EmailPhase::Previewed));

    // Time for a wrongly woken Sent Email to act; it must not.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent_after = emails.get("sent-one").await.unwrap();
    assert_eq!(
        sent_after.resource_version(),
        sent_before.resource_version(),
        "a Sent Email is not touched when its template changes"
    );
    assert_eq!(
        mock.calls(),
        1,
        "nothing resent, nothing sent for the draft"
    );
    assert_eq!(deliveries(&client, &ns).await.len(), 1);
    op.stop().await;
}

#[tokio::test]
async fn a_templated_dry_run_sends_exactly_once_when_the_annotation_is_removed() {
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "tpl-dry-run").await;
    let client = env.client();
    let emails: Api<Email> = Api::namespaced(client.clone(), &ns);
    let op = Operator::start(client.clone(), &ns);
    env.apply_yaml(
        &ns,
        &template_yaml(
            "greet",
            "Hi {{ name }}",
            "Hello {{ name }}",
            "<p>Hello {{ name }}</p>",
        ),
    )
    .await;
    env.apply_yaml(&ns, &templated_email("invite", "greet", "Dora", true))
        .await;
    let previewed = wait_for(&emails, "invite", phase_is(EmailPhase::Previewed), WAIT).await;
    let preview = previewed.status.as_ref().unwrap().preview.clone().unwrap();
    assert_eq!(preview.subject.as_deref(), Some("Hi Dora"));
    assert_eq!(preview.html.as_deref(), Some("<p>Hello Dora</p>"));
    assert_eq!(mock.calls(), 0);
    assert!(deliveries(&client, &ns).await.is_empty());

    // Git drops the annotation: the same manifest applied without it.
    env.apply_yaml(&ns, &templated_email("invite", "greet", "Dora", false))
        .await;
    let sent = wait_for(&emails, "invite", phase_is(EmailPhase::Sent), WAIT).await;
    assert_eq!(
        sent.status.as_ref().unwrap().delivery_hash,
        previewed.status.as_ref().unwrap().delivery_hash,
        "what was previewed is what was sent"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(mock.calls(), 1);
    assert_eq!(mock.bodies()[0]["text"], "Hello Dora");
    assert_eq!(deliveries(&client, &ns).await.len(), 1);
    op.stop().await;
}

#[tokio::test]
async fn a_template_syntax_error_shows_line_and_column_in_status_until_fixed() {
    let env = TestEnv::get().await;
    let (ns, _mock) = setup(&env, "tpl-syntax").await;
    let client = env.client();
    let templates: Api<EmailTemplate> = Api::namespaced(client.clone(), &ns);
    let op = Operator::start(client.clone(), &ns);

    env.apply_yaml(
        &ns,
        &template_yaml("broken", "Hi", "ok", "<p>ok</p>\n<p>{{ name }</p>"),
    )
    .await;
    let t = wait_for(
        &templates,
        "broken",
        |t| template_ready(t).is_some_and(|r| r.0 == "False"),
        WAIT,
    )
    .await;
    let status = t.status.clone().unwrap();
    assert_eq!(template_ready(&t).unwrap().1, "TemplateError");
    let error = status.error.expect("status.error");
    assert_eq!(error.template.as_deref(), Some("broken/html"));
    assert_eq!((error.line, error.column), (Some(2), Some(12)));
    assert!(error.message.contains("syntax error"), "{}", error.message);
    assert!(status.preview.is_none());
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(
        ready
            .message
            .starts_with("broken/html line 2, column 12: syntax error"),
        "{}",
        ready.message
    );
    let stalled = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled")
        .unwrap();
    assert_eq!(stalled.status, "True");

    env.apply_yaml(
        &ns,
        &template_yaml("broken", "Hi", "ok", "<p>ok</p>\n<p>{{ name }}</p>"),
    )
    .await;
    let fixed = wait_for(
        &templates,
        "broken",
        |t| template_ready(t).is_some_and(|r| r.0 == "True"),
        WAIT,
    )
    .await;
    let status = fixed.status.unwrap();
    assert!(status.error.is_none());
    assert_eq!(
        status.preview.and_then(|p| p.html).as_deref(),
        Some("<p>ok</p>\n<p>Ada &lt;3</p>")
    );
    op.stop().await;
}

#[tokio::test]
async fn an_email_waits_for_its_template_and_names_missing_variables() {
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "tpl-missing").await;
    let client = env.client();
    let emails: Api<Email> = Api::namespaced(client.clone(), &ns);
    let op = Operator::start(client.clone(), &ns);

    env.apply_yaml(&ns, &templated_email("early", "later", "Eve", false))
        .await;
    let failed = wait_for(&emails, "early", phase_is(EmailPhase::Failed), WAIT).await;
    assert_eq!(ready_reason(&failed).as_deref(), Some("TemplateNotFound"));

    // Creating the template wakes the Email; it renders and sends.
    let mut tpl = template_yaml("later", "For {{ name }} {{ code }}", "x", "<p>x</p>");
    tpl.push_str("    code: \"42\"\n");
    let tpl = tpl.replace(
        "    - {name: name, required: true}\n",
        "    - {name: name, required: true}\n    - {name: code, required: true}\n",
    );
    env.apply_yaml(&ns, &tpl).await;
    let failed = wait_for(
        &emails,
        "early",
        |e| ready_reason(e).as_deref() == Some("MissingVariables"),
        WAIT,
    )
    .await;
    let error = failed.status.unwrap().error.unwrap();
    assert!(
        error.contains("`code`") && !error.contains("`name`"),
        "{error}"
    );
    assert_eq!(mock.calls(), 0);

    let patch = json!({"spec": {"variables": {"name": "Eve", "code": "7"}}});
    emails
        .patch("early", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_for(&emails, "early", phase_is(EmailPhase::Sent), WAIT).await;
    assert_eq!(mock.calls(), 1);
    assert_eq!(mock.bodies()[0]["subject"], "For Eve 7");
    op.stop().await;
}

#[tokio::test]
async fn built_in_layouts_are_reloaded_and_rerender_templates_and_previews() {
    let env = TestEnv::get().await;
    let (ns, _mock) = setup(&env, "tpl-builtins").await;
    let client = env.client();
    let templates: Api<EmailTemplate> = Api::namespaced(client.clone(), &ns);
    let emails: Api<Email> = Api::namespaced(client.clone(), &ns);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("layouts")).unwrap();
    let layout = dir.path().join("layouts/note.txt");
    std::fs::write(&layout, "[{% block content %}{% endblock %}]").unwrap();
    let settings = Settings {
        templates_dir: Some(dir.path().to_path_buf()),
        ..Settings::default()
    };
    let op = Operator::start_with(client.clone(), &ns, settings);

    env.apply_yaml(
        &ns,
        &template_yaml(
            "note",
            "Note",
            "{% extends 'layouts/note.txt' %}{% block content %}hi {{ name }}{% endblock %}",
            "<p>{{ name }}</p>",
        ),
    )
    .await;
    env.apply_yaml(&ns, &templated_email("memo", "note", "Fay", true))
        .await;
    wait_for(
        &templates,
        "note",
        |t| template_preview(t, "text").as_deref() == Some("[hi Ada <3]"),
        WAIT,
    )
    .await;
    let text = |e: &Email| {
        e.status
            .as_ref()
            .and_then(|s| s.preview.as_ref())
            .and_then(|p| p.text.clone())
    };
    wait_for(
        &emails,
        "memo",
        |e| text(e).as_deref() == Some("[hi Fay]"),
        WAIT,
    )
    .await;

    // A ConfigMap update replaces the file; no restart.
    std::fs::write(&layout, "<<{% block content %}{% endblock %}>>").unwrap();
    wait_for(
        &templates,
        "note",
        |t| template_preview(t, "text").as_deref() == Some("<<hi Ada <3>>"),
        WAIT,
    )
    .await;
    wait_for(
        &emails,
        "memo",
        |e| text(e).as_deref() == Some("<<hi Fay>>"),
        WAIT,
    )
    .await;
    op.stop().await;
}

// ---- the offline commands, through the binary ------------------------------------------

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs kmailops in the repository (so `templates/` is the default built-in folder).
async fn kmailops(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_kmailops"))
        .args(args)
        .current_dir(repo())
        .env_remove("KMAILOPS_TEMPLATES_DIR")
        .output()
        .await
        .expect("run kmailops")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn validate_passes_on_the_shipped_examples_and_flux_layout() {
    let out = kmailops(&["validate", "examples"]).await;
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "");
    assert!(
        text(&out.stderr).contains("0 problem(s)"),
        "{}",
        text(&out.stderr)
    );

    // The Flux layout keeps its Secrets out of Git (SOPS): everything else must hold.
    let out = kmailops(&["validate", "flux", "--skip-secrets"]).await;
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[tokio::test]
async fn validate_reports_each_broken_manifest_on_its_own_line() {
    let out = kmailops(&["validate", "tests/fixtures/broken"]).await;
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let d = "tests/fixtures/broken";
    let expected = [
        format!("{d}/bad-yaml.yaml: document 1: not valid YAML: "),
        format!(
            "{d}/email-missing-sender.yaml: Email/no-sender: SenderNotFound: spec.senderConfigRef: EmailSenderConfig broken/ghost does not exist"
        ),
        format!(
            "{d}/email-missing-template.yaml: Email/no-template: TemplateNotFound: EmailTemplate broken/nope does not exist"
        ),
        format!(
            "{d}/email-missing-vars.yaml: Email/no-vars: MissingVariables: EmailTemplate broken/welcome: required variable(s) not given: `name`"
        ),
        format!("{d}/email-typo.yaml: Email/typo: spec.subjetc: unknown field"),
        format!("{d}/nested/bad-address.yaml: Email/bad-address: spec.to[0]: "),
        format!(
            "{d}/sender-missing-secret.yaml: EmailSenderConfig/no-secret: spec.fallback[0]: EmailSenderConfig broken/nowhere is not in the files"
        ),
        format!(
            "{d}/sender-missing-secret.yaml: EmailSenderConfig/no-secret: spec.mailgun.apiKeySecretRef: Secret broken/missing-key is not in the given files"
        ),
        format!(
            "{d}/template-syntax.yaml: EmailTemplate/broken-syntax: TemplateError: broken-syntax/html line 2, column 12: syntax error"
        ),
        format!(
            "{d}/unknown-kind.yaml: EmailTemplat/misspelled: kmailops.io has no kind `EmailTemplat`"
        ),
    ];
    for want in &expected {
        assert!(
            lines.iter().any(|l| l.starts_with(want.as_str())),
            "missing a line starting with {want:?} in:\n{stdout}"
        );
    }
    assert_eq!(
        lines.len(),
        expected.len(),
        "one line per problem, nothing else:\n{stdout}"
    );
    assert!(!stdout.contains("ok.yaml"), "{stdout}");
}

#[tokio::test]
async fn render_prints_the_subject_and_recipients_with_the_text_body_and_the_html_body_alone() {
    let examples = [
        "-R",
        "-f",
        "examples",
        "--email",
        "shop/order-10045-shipped",
    ];
    let out = kmailops(&[&["render"], &examples[..]].concat()).await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "From: Example Shop <orders@shop.example.com>\nReply-To: Example Shop Support <support@shop.example.com>\nTo: Ada Lovelace <ada@example.org>\nSubject: Your order 10045 is on its way\n\nHello Ada,\n\nyour order 10045 has shipped with DHL.\nTrack it here: https://track.example.com/10045\n\nThank you for shopping with us.\n\n-- \nExample Shop, 1 Market Street, Springfield\n"
    );

    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("vars.yaml");
    std::fs::write(&vars, "customer_name: \"Grace <Hopper>\"\ncarrier: UPS\n").unwrap();
    let vars = vars.display().to_string();
    let out = kmailops(
        &[
            &["render", "--format", "html", "--vars", &vars],
            &examples[..],
        ]
        .concat(),
    )
    .await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let html = text(&out.stdout);
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(
        html.contains("<p>Hello Grace &lt;Hopper&gt;,</p>"),
        "{html}"
    );
    assert!(html.contains("has shipped with UPS."), "{html}");
    assert!(
        html.contains("<title>Your order 10045 is on its way</title>"),
        "{html}"
    );
}

#[tokio::test]
async fn render_eml_prints_the_whole_message() {
    let out = kmailops(&[
        "render",
        "-R",
        "-f",
        "examples",
        "--email",
        "order-10045-shipped",
        "--format",
        "eml",
    ])
    .await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let eml = text(&out.stdout);
    for header in [
        "From: \"Example Shop\" <orders@shop.example.com>\r\n",
        "To: \"Ada Lovelace\" <ada@example.org>\r\n",
        "Subject: Your order 10045 is on its way\r\n",
        "Reply-To: \"Example Shop Support\" <support@shop.example.com>\r\n",
        "MIME-Version: 1.0\r\n",
        "Content-Type: multipart/alternative;",
    ] {
        assert!(eml.contains(header), "no {header:?} in:\n{eml}");
    }
    assert!(
        eml.contains("Content-Type: text/plain; charset=utf-8"),
        "{eml}"
    );
    assert!(
        eml.contains("Content-Type: text/html; charset=utf-8"),
        "{eml}"
    );
    assert!(eml.contains("Message-ID: <"), "{eml}");
}

const EMAIL_WITHOUT_SENDER: &str = r#"
apiVersion: kmailops.io/v1alpha1
kind: EmailTemplate
metadata: {name: welcome}
spec:
  subject: "Welcome, {{ name }}"
  text: "Hello {{ name }}"
---
apiVersion: kmailops.io/v1alpha1
kind: Email
metadata: {name: e}
spec:
  to: ["Ada Lovelace <ada@example.org>", b@example.org]
  cc: [c@example.org]
  bcc: [audit@example.org]
  templateRef: {name: welcome}
  variables: {name: Ada}
"#;

#[tokio::test]
async fn render_shows_the_rendered_subject_and_every_recipient_without_a_sender() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("email.yaml");
    std::fs::write(&file, EMAIL_WITHOUT_SENDER).unwrap();
    let file = file.display().to_string();
    let out = kmailops(&["render", "-f", &file]).await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "To: Ada Lovelace <ada@example.org>, b@example.org\nCc: c@example.org\nBcc: audit@example.org\nSubject: Welcome, Ada\n\nHello Ada\n"
    );
    assert_eq!(text(&out.stderr), "", "no sender is no problem for text");
}

#[tokio::test]
async fn render_eml_without_a_sender_uses_a_placeholder_from_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("email.yaml");
    std::fs::write(&file, EMAIL_WITHOUT_SENDER).unwrap();
    let file = file.display().to_string();
    let out = kmailops(&["render", "-f", &file, "--format", "eml"]).await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let eml = text(&out.stdout);
    for header in [
        "From: sender@example.invalid\r\n",
        "To: \"Ada Lovelace\" <ada@example.org>, b@example.org\r\n",
        "Subject: Welcome, Ada\r\n",
    ] {
        assert!(eml.contains(header), "no {header:?} in:\n{eml}");
    }
    assert!(eml.trim_end().ends_with("Hello Ada"), "{eml}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("no EmailSenderConfig for Email default/e")
            && stderr.contains("From is the placeholder sender@example.invalid"),
        "{stderr}"
    );
}

#[tokio::test]
async fn render_fails_with_the_template_location_and_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("all.yaml");
    std::fs::write(
        &file,
        r#"
apiVersion: kmailops.io/v1alpha1
kind: EmailTemplate
metadata: {name: t}
spec:
  subject: Hi
  text: "line one\n{{ missing_var }}"
---
apiVersion: kmailops.io/v1alpha1
kind: Email
metadata: {name: e}
spec:
  to: [a@example.org]
  templateRef: {name: t}
"#,
    )
    .unwrap();
    let file = file.display().to_string();
    let out = kmailops(&["render", "-f", &file]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("EmailTemplate default/t: t/text line 2, column 4: undefined value: `missing_var` is undefined"),
        "{stderr}"
    );
}

#[tokio::test]
async fn send_renders_a_templated_email_like_the_operator() {
    let mock = support::mock_mailersend::MockMailerSend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("all.yaml");
    std::fs::write(
        &file,
        format!(
            r#"
apiVersion: v1
kind: Secret
metadata: {{name: token}}
stringData: {{token: test-token}}
---
apiVersion: kmailops.io/v1alpha1
kind: EmailSenderConfig
metadata: {{name: primary}}
spec:
  default: true
  sender: {{address: shop@example.com}}
  mailersend: {{apiTokenSecretRef: {{name: token, key: token}}, baseUrl: "{}"}}
---
apiVersion: kmailops.io/v1alpha1
kind: EmailTemplate
metadata: {{name: t}}
spec:
  subject: "Hi {{{{ name }}}}"
  html: |
    {{% extends "layouts/base.html" %}}
    {{% block content %}}<p>{{{{ name }}}}</p>{{% endblock %}}
---
apiVersion: kmailops.io/v1alpha1
kind: Email
metadata: {{name: e}}
spec:
  to: [a@example.org]
  templateRef: {{name: t}}
  variables: {{name: "Ann & Bo"}}
"#,
            mock.base_url
        ),
    )
    .unwrap();
    let file = file.display().to_string();
    let out = kmailops(&["send", "-f", &file]).await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ms-0001\n");
    let body = &mock.bodies()[0];
    assert_eq!(body["subject"], "Hi Ann & Bo");
    let html = body["html"].as_str().unwrap();
    assert!(
        html.contains("<p>Ann &amp; Bo</p>") && html.contains("<!DOCTYPE html>"),
        "{html}"
    );
}
