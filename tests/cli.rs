//! `kmailops send` and `kmailops check` end to end through the binary, against the
//! MailerSend mock and a real SMTP server.

mod common;

use std::path::Path;
use std::process::Output;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::smtp_server::{Mode, Options, SmtpServer, pki};
use common::{Answer, serve};

const TOKEN: &str = "mlsn.CLI-TOKEN-0b7e44-distinctive";

async fn kmailops(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_kmailops"))
        .args(args)
        .output()
        .await
        .expect("run kmailops")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write manifest");
    path.display().to_string()
}

fn mailersend_manifests(base: &str) -> String {
    format!(
        r#"
apiVersion: kmailops.io/v1alpha1
kind: EmailSenderConfig
metadata: {{name: primary, namespace: mail}}
spec:
  sender: {{address: noreply@example.com, name: Example}}
  default: true
  mailersend:
    apiTokenSecretRef: {{name: mailersend, key: token}}
    baseUrl: {base}/v1
---
apiVersion: v1
kind: Secret
metadata: {{name: mailersend, namespace: mail}}
data: {{token: {}}}
"#,
        STANDARD.encode(format!("{TOKEN}\n"))
    )
}

const EMAIL: &str = r#"
apiVersion: kmailops.io/v1alpha1
kind: Email
metadata: {name: welcome, namespace: mail, labels: {app: web}}
spec:
  to: ["Jane <jane@example.org>"]
  subject: Welcome
  text: Hello Jane
"#;

#[tokio::test]
async fn send_delivers_through_mailersend_and_prints_the_message_id() {
    let mock = serve(|_| Answer::new(202, "").header("X-Message-Id", "ms-42")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sender = write(dir.path(), "sender.yaml", &mailersend_manifests(&mock.url));
    let email = write(dir.path(), "email.yaml", EMAIL);

    let out = kmailops(&["send", "-f", &sender, "-f", &email]).await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ms-42\n");
    assert!(text(&out.stderr).contains("through mail/primary (MailerSend)"));

    let req = mock.only_request();
    assert_eq!(req.path, "/v1/email");
    assert_eq!(
        req.header("authorization"),
        format!("Bearer {TOKEN}"),
        "trailing newline dropped"
    );
    let body = req.json();
    assert_eq!(body["to"][0]["email"], "jane@example.org");
    assert_eq!(body["subject"], "Welcome");
    assert_eq!(body["text"], "Hello Jane");
}

#[tokio::test]
async fn send_failure_exits_non_zero_with_the_class_and_the_providers_message() {
    let mock = serve(|req| {
        Answer::new(
            422,
            &serde_json::json!({
                "message": "The from.email domain must be verified.",
                "errors": {"from.email": ["The from.email domain must be verified. #MS42207"]},
                "echo": req.header("authorization"),
            })
            .to_string(),
        )
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sender = write(dir.path(), "sender.yaml", &mailersend_manifests(&mock.url));
    let email = write(dir.path(), "email.yaml", EMAIL);

    let out = kmailops(&["send", "-f", &sender, "-f", &email]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("send failed (Permanent, status 422)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("from.email: The from.email domain must be verified. #MS42207"),
        "{stderr}"
    );
    assert!(!stderr.contains(TOKEN), "{stderr}");
}

#[tokio::test]
async fn send_delivers_over_starttls_with_auth_and_a_configmap_attachment() {
    let pki = pki("cli");
    let server =
        SmtpServer::start(Options::new(Mode::StartTls, Some(&pki)).user("mailer", "s3cret-pw"));
    let ca = pki.ca_pem.replace('\n', "\n      ");
    let manifests = format!(
        r#"
apiVersion: kmailops.io/v1alpha1
kind: EmailSenderConfig
metadata: {{name: smtp}}
spec:
  sender: {{address: noreply@example.com}}
  smtp:
    host: 127.0.0.1
    port: {port}
    username: mailer
    passwordSecretRef: {{name: smtp, key: password}}
    caBundle: |
      {ca}
---
apiVersion: v1
kind: Secret
metadata: {{name: smtp}}
stringData: {{password: s3cret-pw}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: files}}
data: {{notes.txt: "release notes"}}
---
apiVersion: kmailops.io/v1alpha1
kind: Email
metadata: {{name: notes}}
spec:
  senderConfigRef: {{name: smtp}}
  to: [ops@example.org]
  bcc: [audit@example.org]
  subject: Release notes
  html: <p>See attached</p>
  attachments:
  - filename: notes.txt
    configMapKeyRef: {{name: files, key: notes.txt}}
"#,
        port = server.port
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "all.yaml", &manifests);

    let out = kmailops(&["send", "-f", &file]).await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let msgs = server.messages();
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(
        text(&out.stdout).trim(),
        m["headers"]["Message-ID"].as_str().unwrap_or_default()
    );
    assert_eq!(m["tls"], true);
    assert_eq!(m["auth_user"], "mailer");
    assert_eq!(
        m["rcpt_tos"],
        serde_json::json!(["ops@example.org", "audit@example.org"])
    );
    assert_eq!(m["attachments"][0]["filename"], "notes.txt");
    assert_eq!(m["attachments"][0]["content_type"], "text/plain");
    assert_eq!(
        m["attachments"][0]["content_b64"],
        STANDARD.encode("release notes")
    );
}

#[tokio::test]
async fn send_names_a_missing_template_and_asks_which_email_when_there_are_several() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sender = write(
        dir.path(),
        "sender.yaml",
        &mailersend_manifests("http://127.0.0.1:9"),
    );
    let templated = write(
        dir.path(),
        "templated.yaml",
        "apiVersion: kmailops.io/v1alpha1\nkind: Email\nmetadata: {name: t, namespace: mail}\nspec: {to: [a@example.org], templateRef: {name: welcome}}\n",
    );
    let out = kmailops(&["send", "-f", &sender, "-f", &templated]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("TemplateNotFound: EmailTemplate mail/welcome does not exist"),
        "{}",
        text(&out.stderr)
    );

    let email = write(dir.path(), "email.yaml", EMAIL);
    let out = kmailops(&["send", "-f", &sender, "-f", &templated, "-f", &email]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("2 Emails (mail/t, mail/welcome); choose one with --email"),
        "{stderr}"
    );
}

#[tokio::test]
async fn check_reports_healthy_with_exit_zero_and_a_bad_token_with_exit_one() {
    let mock = serve(|_| Answer::new(200, r#"{"quota":100,"remaining":99,"reset":"later"}"#)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "sender.yaml", &mailersend_manifests(&mock.url));
    let out = kmailops(&["check", "-f", &file]).await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("mail/primary (MailerSend): Healthy: "),
        "{}",
        text(&out.stdout)
    );

    let mock = serve(|_| Answer::new(401, r#"{"message":"Unauthenticated."}"#)).await;
    let file = write(dir.path(), "sender.yaml", &mailersend_manifests(&mock.url));
    let out = kmailops(&["check", "-f", &file, "--sender", "mail/primary"]).await;
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("Unhealthy (AuthFailed): MailerSend answered 401: Unauthenticated."),
        "{stdout}"
    );
}

#[tokio::test]
async fn check_connects_to_an_smtp_server_with_implicit_tls() {
    let pki = pki("cli-check");
    let server = SmtpServer::start(Options::new(Mode::Tls, Some(&pki)));
    let ca = pki.ca_pem.replace('\n', "\n      ");
    let manifest = format!(
        "apiVersion: kmailops.io/v1alpha1\nkind: EmailSenderConfig\nmetadata: {{name: smtp}}\nspec:\n  sender: {{address: noreply@example.com}}\n  healthCheck: {{timeout: 5s}}\n  smtp:\n    host: 127.0.0.1\n    port: {}\n    tls: TLS\n    caBundle: |\n      {ca}\n",
        server.port
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "smtp.yaml", &manifest);
    let out = kmailops(&["check", "-f", &file]).await;
    assert!(
        out.status.success(),
        "stdout: {} stderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("default/smtp (SMTP): Healthy"),
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test]
async fn send_refuses_an_email_whose_not_after_has_passed() {
    let mock = serve(|_| Answer::new(202, "").header("X-Message-Id", "never")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sender = write(dir.path(), "sender.yaml", &mailersend_manifests(&mock.url));
    let expired = format!("{EMAIL}  notAfter: \"2020-01-01T00:00:00Z\"\n");
    let email = write(dir.path(), "email.yaml", &expired);
    let out = kmailops(&["send", "-f", &sender, "-f", &email]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("spec.notAfter (2020-01-01T00:00:00Z) has passed"),
        "{}",
        text(&out.stderr)
    );
    assert!(mock.requests().is_empty(), "nothing may reach the provider");
}
