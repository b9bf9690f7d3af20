//! `kmailops send` and `kmailops check` through the binary for the providers added after the
//! first three (Resend, Postmark, SendGrid, Amazon SES, SMTP with OAuth2), each against its
//! local server from tests/support/.

mod common;
#[path = "support/mock_postmark.rs"]
mod mock_postmark;
#[path = "support/mock_resend.rs"]
mod mock_resend;
#[path = "support/mock_sendgrid.rs"]
mod mock_sendgrid;
#[path = "support/mock_ses.rs"]
mod mock_ses;
#[path = "support/smtp_oauth2.rs"]
mod smtp_oauth2;

use std::path::Path;
use std::process::Output;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

async fn kmailops_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_kmailops"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().await.expect("run kmailops")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write manifest");
    path.display().to_string()
}

/// A Secret manifest with one key, its value followed by a newline (as `echo` leaves it).
fn secret(name: &str, key: &str, value: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: mail}}\ndata: {{{key}: {}}}\n",
        STANDARD.encode(format!("{value}\n"))
    )
}

/// An EmailSenderConfig `mail/primary`, default, with `provider` as its provider section.
fn sender(provider: &str) -> String {
    format!(
        "apiVersion: kmailops.io/v1alpha1\nkind: EmailSenderConfig\nmetadata: {{name: primary, namespace: mail}}\nspec:\n  sender: {{address: noreply@example.com, name: Example}}\n  default: true\n{provider}"
    )
}

const EMAIL: &str = r#"
apiVersion: kmailops.io/v1alpha1
kind: Email
metadata: {name: welcome, namespace: mail}
spec:
  to: ["Jane <jane@example.org>"]
  cc: [carol@example.org]
  subject: Welcome
  text: Hello Jane
  tags: [welcome]
"#;

async fn send_and_check(manifests: &str, env: &[(&str, &str)]) -> (Output, Output) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sender = write(dir.path(), "sender.yaml", manifests);
    let email = write(dir.path(), "email.yaml", EMAIL);
    let send = kmailops_env(&["send", "-f", &sender, "-f", &email], env).await;
    let check = kmailops_env(&["check", "-f", &sender], env).await;
    (send, check)
}

// --- Resend -------------------------------------------------------------------------------

const RESEND_KEY: &str = "re_CLI_4b1d9e_distinctive";

fn resend_manifests(base: &str) -> String {
    format!(
        "{}{}",
        sender(&format!(
            "  resend:\n    apiKeySecretRef: {{name: resend, key: apiKey}}\n    baseUrl: {base}\n"
        )),
        secret("resend", "apiKey", RESEND_KEY)
    )
}

#[tokio::test]
async fn resend_send_prints_the_email_id_and_check_finds_the_domain() {
    let mock = mock_resend::MockResend::start(RESEND_KEY).await;
    let (send, check) = send_and_check(&resend_manifests(&mock.url), &[]).await;
    assert!(send.status.success(), "stderr: {}", text(&send.stderr));
    let sent = mock.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(text(&send.stdout), format!("{}\n", sent[0].id));
    assert!(
        text(&send.stderr).contains("through mail/primary (Resend)"),
        "{}",
        text(&send.stderr)
    );
    assert_eq!(
        sent[0].body["to"],
        serde_json::json!(["Jane <jane@example.org>"])
    );
    assert_eq!(sent[0].body["cc"], serde_json::json!(["carol@example.org"]));
    let key = sent[0].idempotency_key.clone().expect("an Idempotency-Key");
    assert_eq!(key.len(), 64, "{key}");

    assert!(check.status.success(), "stderr: {}", text(&check.stderr));
    assert!(
        text(&check.stdout).starts_with("mail/primary (Resend): Healthy: "),
        "{}",
        text(&check.stdout)
    );
}

#[tokio::test]
async fn resend_with_a_wrong_key_fails_with_exit_one_and_never_prints_the_key() {
    let mock = mock_resend::MockResend::start("re_OTHER_key_on_the_server").await;
    let (send, check) = send_and_check(&resend_manifests(&mock.url), &[]).await;
    assert_eq!(send.status.code(), Some(1));
    let stderr = text(&send.stderr);
    assert!(
        stderr.contains("send failed (Permanent, credentials refused, status 403)"),
        "{stderr}"
    );
    assert!(stderr.contains("invalid_api_key"), "{stderr}");
    assert!(!stderr.contains(RESEND_KEY), "{stderr}");
    assert_eq!(check.status.code(), Some(1));
    let stdout = text(&check.stdout);
    assert!(stdout.contains("Unhealthy (AuthFailed)"), "{stdout}");
    assert!(!stdout.contains(RESEND_KEY), "{stdout}");
}

// --- Postmark -----------------------------------------------------------------------------

const POSTMARK_TOKEN: &str = "pm-CLI-90d1a7-distinctive";

fn postmark_manifests(base: &str) -> String {
    format!(
        "{}{}",
        sender(&format!(
            "  postmark:\n    serverTokenSecretRef: {{name: postmark, key: serverToken}}\n    baseUrl: {base}\n"
        )),
        secret("postmark", "serverToken", POSTMARK_TOKEN)
    )
}

#[tokio::test]
async fn postmark_send_prints_the_message_id_and_check_reads_the_server() {
    let mock = mock_postmark::MockPostmark::start(POSTMARK_TOKEN).await;
    let (send, check) = send_and_check(&postmark_manifests(&mock.url), &[]).await;
    assert!(send.status.success(), "stderr: {}", text(&send.stderr));
    assert_eq!(text(&send.stdout), "b7bc2f4a-e38e-4336-af7d-e6c390000001\n");
    assert!(
        text(&send.stderr).contains("(Postmark)"),
        "{}",
        text(&send.stderr)
    );
    let sent = mock.sent();
    assert_eq!(sent[0]["To"], "Jane <jane@example.org>");
    assert_eq!(sent[0]["Cc"], "carol@example.org");
    assert_eq!(sent[0]["Tag"], "welcome");
    assert_eq!(sent[0]["MessageStream"], "outbound");
    assert!(check.status.success(), "stderr: {}", text(&check.stderr));
    assert!(
        text(&check.stdout).starts_with("mail/primary (Postmark): Healthy: "),
        "{}",
        text(&check.stdout)
    );
}

#[tokio::test]
async fn postmark_with_a_suppressed_recipient_fails_permanently_naming_it() {
    let mock = mock_postmark::MockPostmark::start(POSTMARK_TOKEN).await;
    mock.suppress("jane@example.org");
    let (send, _check) = send_and_check(&postmark_manifests(&mock.url), &[]).await;
    assert_eq!(send.status.code(), Some(1));
    let stderr = text(&send.stderr);
    assert!(
        stderr.contains("send failed (Permanent, status 422)"),
        "{stderr}"
    );
    assert!(stderr.contains("ErrorCode 406"), "{stderr}");
    assert!(stderr.contains("jane@example.org"), "{stderr}");
}

// --- SendGrid -----------------------------------------------------------------------------

const SENDGRID_KEY: &str = "SG.CLI-77a0.distinctive-key";

fn sendgrid_manifests(base: &str) -> String {
    format!(
        "{}{}",
        sender(&format!(
            "  sendgrid:\n    apiKeySecretRef: {{name: sendgrid, key: apiKey}}\n    baseUrl: {base}\n"
        )),
        secret("sendgrid", "apiKey", SENDGRID_KEY)
    )
}

#[tokio::test]
async fn sendgrid_send_prints_the_x_message_id_and_check_needs_mail_send() {
    let mock = mock_sendgrid::MockSendGrid::start(SENDGRID_KEY).await;
    let (send, check) = send_and_check(&sendgrid_manifests(&mock.url), &[]).await;
    assert!(send.status.success(), "stderr: {}", text(&send.stderr));
    assert_eq!(text(&send.stdout), "14c5d75ce93.dfd.64b469.filter-0001\n");
    let sent = mock.sent();
    assert_eq!(
        sent[0]["personalizations"][0]["cc"][0]["email"],
        "carol@example.org"
    );
    assert_eq!(sent[0]["categories"], serde_json::json!(["welcome"]));
    assert!(check.status.success(), "stderr: {}", text(&check.stderr));
    assert!(
        text(&check.stdout).starts_with("mail/primary (SendGrid): Healthy: "),
        "{}",
        text(&check.stdout)
    );

    mock.set_scopes(&["user.profile.read"]);
    let (send, check) = send_and_check(&sendgrid_manifests(&mock.url), &[]).await;
    assert_eq!(send.status.code(), Some(1));
    assert!(
        text(&send.stderr).contains("send failed (Permanent, credentials refused, status 403)"),
        "{}",
        text(&send.stderr)
    );
    assert_eq!(check.status.code(), Some(1));
    assert!(
        text(&check.stdout).contains("Unhealthy (AuthFailed)"),
        "{}",
        text(&check.stdout)
    );
    assert!(!text(&send.stderr).contains(SENDGRID_KEY));
}

// --- Amazon SES ---------------------------------------------------------------------------

const AWS_KEY_ID: &str = "AKIAIOSFODNN7CLITEST";
const AWS_SECRET: &str = "cli/K7MDENG/bPxRfiCYzEXAMPLEKEY-distinctive";

fn ses_section(base: &str, static_keys: bool) -> String {
    let keys = if static_keys {
        "    accessKeyIdSecretRef: {name: aws, key: accessKeyId}\n    secretAccessKeySecretRef: {name: aws, key: secretAccessKey}\n"
    } else {
        ""
    };
    sender(&format!(
        "  ses:\n    region: {}\n    endpoint: {base}\n{keys}",
        mock_ses::REGION
    ))
}

/// Every AWS variable of the default chain, cleared, so the developer's own environment never
/// leaks into a test.
const AWS_VARS: [&str; 9] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
];

async fn ses_send_and_check(manifests: &str, env: &[(&str, &str)]) -> (Output, Output) {
    let mut all: Vec<(&str, &str)> = AWS_VARS.iter().map(|v| (*v, "")).collect();
    all.extend_from_slice(env);
    send_and_check(manifests, &all).await
}

#[tokio::test]
async fn ses_with_keys_from_secrets_sends_and_checks() {
    let mock = mock_ses::MockSes::start(AWS_KEY_ID, AWS_SECRET).await;
    let manifests = format!(
        "{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: aws, namespace: mail}}\nstringData: {{accessKeyId: {AWS_KEY_ID}, secretAccessKey: \"{AWS_SECRET}\"}}\n",
        ses_section(&mock.url, true)
    );
    let (send, check) = ses_send_and_check(&manifests, &[]).await;
    assert!(send.status.success(), "stderr: {}", text(&send.stderr));
    assert!(
        text(&send.stdout).starts_with("0102019abcde0001-"),
        "{}",
        text(&send.stdout)
    );
    assert!(
        text(&send.stderr).contains("(SES)"),
        "{}",
        text(&send.stderr)
    );
    let sent = mock.sent();
    assert_eq!(
        sent[0]["Destination"]["CcAddresses"][0],
        "carol@example.org"
    );
    assert_eq!(sent[0]["EmailTags"][0]["Name"], "welcome");
    assert!(check.status.success(), "stderr: {}", text(&check.stderr));
    assert!(
        text(&check.stdout).starts_with("mail/primary (SES): Healthy: "),
        "{}",
        text(&check.stdout)
    );
}

#[tokio::test]
async fn ses_without_keys_uses_the_environment() {
    let mock = mock_ses::MockSes::start(AWS_KEY_ID, AWS_SECRET).await;
    let (send, check) = ses_send_and_check(
        &ses_section(&mock.url, false),
        &[
            ("AWS_ACCESS_KEY_ID", AWS_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", AWS_SECRET),
        ],
    )
    .await;
    assert!(send.status.success(), "stderr: {}", text(&send.stderr));
    assert!(check.status.success(), "stdout: {}", text(&check.stdout));
    assert_eq!(mock.sent().len(), 1);

    // A wrong secret in the environment: refused, and never printed.
    let (send, _) = ses_send_and_check(
        &ses_section(&mock.url, false),
        &[
            ("AWS_ACCESS_KEY_ID", AWS_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", "env/WRONG-secret-distinctive"),
        ],
    )
    .await;
    assert_eq!(send.status.code(), Some(1));
    let stderr = text(&send.stderr);
    assert!(stderr.contains("InvalidSignatureException"), "{stderr}");
    assert!(!stderr.contains("env/WRONG-secret-distinctive"), "{stderr}");
}

#[tokio::test]
async fn ses_without_keys_uses_eks_pod_identity() {
    let mock = mock_ses::MockSes::start(AWS_KEY_ID, AWS_SECRET).await;
    mock.allow_container(
        "pod-identity-token-distinctive",
        "ASIAPODIDENTITY00001",
        "pod/secret-distinctive-0001",
        "pod-session-token-0001",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = write(
        dir.path(),
        "eks-pod-identity-token",
        "pod-identity-token-distinctive\n",
    );
    let url = format!("{}/container-credentials", mock.url);
    let (send, check) = ses_send_and_check(
        &ses_section(&mock.url, false),
        &[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &url),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &token_file),
        ],
    )
    .await;
    assert!(send.status.success(), "stderr: {}", text(&send.stderr));
    assert!(check.status.success(), "stdout: {}", text(&check.stdout));
    assert_eq!(mock.sent().len(), 1);
    assert!(
        mock.signed_headers()
            .iter()
            .any(|h| h == "x-amz-security-token")
    );
}

#[tokio::test]
async fn ses_without_keys_uses_web_identity() {
    let mock = mock_ses::MockSes::start(AWS_KEY_ID, AWS_SECRET).await;
    mock.allow_web_identity(
        "eyJhbGciOiJSUzI1NiJ9.irsa-token-distinctive",
        "ASIAWEBIDENTITY00001",
        "irsa/secret-distinctive-0001",
        "irsa-session&token",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = write(
        dir.path(),
        "token",
        "eyJhbGciOiJSUzI1NiJ9.irsa-token-distinctive",
    );
    let (send, check) = ses_send_and_check(
        &ses_section(&mock.url, false),
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", &token_file),
            ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/kmailops"),
            ("AWS_ENDPOINT_URL_STS", &mock.url),
        ],
    )
    .await;
    assert!(send.status.success(), "stderr: {}", text(&send.stderr));
    assert!(check.status.success(), "stdout: {}", text(&check.stdout));
    assert_eq!(mock.sent().len(), 1);

    // A token STS does not accept: a permanent error that names STS and the role.
    std::fs::write(&token_file, "not-the-token").expect("write");
    let (send, check) = ses_send_and_check(
        &ses_section(&mock.url, false),
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", &token_file),
            ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/kmailops"),
            ("AWS_ENDPOINT_URL_STS", &mock.url),
        ],
    )
    .await;
    assert_eq!(send.status.code(), Some(1));
    let stderr = text(&send.stderr);
    assert!(stderr.contains("InvalidIdentityToken"), "{stderr}");
    assert!(
        stderr.contains("arn:aws:iam::123456789012:role/kmailops"),
        "{stderr}"
    );
    assert!(
        text(&check.stdout).contains("Unhealthy (AuthFailed)"),
        "{}",
        text(&check.stdout)
    );
}

#[tokio::test]
async fn ses_without_any_credentials_says_what_to_set() {
    let mock = mock_ses::MockSes::start(AWS_KEY_ID, AWS_SECRET).await;
    let (send, check) = ses_send_and_check(&ses_section(&mock.url, false), &[]).await;
    assert_eq!(send.status.code(), Some(1));
    let stderr = text(&send.stderr);
    assert!(stderr.contains("no AWS credentials"), "{stderr}");
    assert_eq!(check.status.code(), Some(1));
    assert_eq!(mock.posts(), 0);
}

// --- SMTP with OAuth2 ---------------------------------------------------------------------

const OAUTH_CLIENT_SECRET: &str = "Q~cli.client-secret-5d2e-distinctive";

fn smtp_oauth2_manifests(port: u16, ca_pem: &str, token_url: &str, client_secret: &str) -> String {
    format!(
        "{}{}",
        sender(&format!(
            "  smtp:\n    host: 127.0.0.1\n    port: {port}\n    tls: StartTLS\n    username: noreply@example.com\n    caBundle: {}\n    oauth2:\n      tokenUrl: {token_url}\n      clientId: {}\n      clientSecretSecretRef: {{name: m365-app, key: clientSecret}}\n      scope: {}\n",
            serde_json::to_string(ca_pem).expect("json"),
            smtp_oauth2::CLIENT_ID,
            smtp_oauth2::SCOPE
        )),
        secret("m365-app", "clientSecret", client_secret)
    )
}

#[tokio::test]
async fn smtp_with_oauth2_sends_and_checks_through_the_binary() {
    let pki = common::smtp_server::pki("cli-oauth2");
    let tokens = smtp_oauth2::TokenServer::start(OAUTH_CLIENT_SECRET).await;
    let server = smtp_oauth2::OAuthSmtpServer::start(&pki, "noreply@example.com", &tokens);
    let manifests =
        smtp_oauth2_manifests(server.port, &pki.ca_pem, &tokens.url, OAUTH_CLIENT_SECRET);
    let (send, check) = send_and_check(&manifests, &[]).await;
    assert!(send.status.success(), "stderr: {}", text(&send.stderr));
    assert!(
        text(&send.stderr).contains("(SMTP)"),
        "{}",
        text(&send.stderr)
    );
    let msgs = server.messages();
    assert_eq!(msgs.len(), 1, "{:?}", server.events());
    assert_eq!(msgs[0]["auth_user"], "noreply@example.com");
    assert!(check.status.success(), "stdout: {}", text(&check.stdout));
    assert!(
        text(&check.stdout).contains("AUTH XOAUTH2"),
        "{}",
        text(&check.stdout)
    );

    let wrong = "Q~cli.WRONG-secret-distinctive";
    tokens.echo_secret();
    let manifests = smtp_oauth2_manifests(server.port, &pki.ca_pem, &tokens.url, wrong);
    let (send, check) = send_and_check(&manifests, &[]).await;
    assert_eq!(send.status.code(), Some(1));
    let stderr = text(&send.stderr);
    assert!(stderr.contains("invalid_client"), "{stderr}");
    assert!(!stderr.contains(wrong), "{stderr}");
    assert_eq!(check.status.code(), Some(1));
    assert!(
        text(&check.stdout).contains("Unhealthy (AuthFailed)"),
        "{}",
        text(&check.stdout)
    );
    assert!(!text(&check.stdout).contains(wrong));
}

// --- validate ------------------------------------------------------------------------------

#[tokio::test]
async fn validate_names_every_missing_secret_of_a_sender_not_only_the_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let manifests = format!(
        "{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: aws, namespace: mail}}\nstringData: {{accessKeyId: {AWS_KEY_ID}}}\n",
        ses_section("https://email.eu-west-1.amazonaws.com", true)
    );
    write(dir.path(), "sender.yaml", &manifests);
    let out = kmailops_env(&["validate", &dir.path().display().to_string()], &[]).await;
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("spec.ses.secretAccessKeySecretRef: Secret mail/aws")
            && stdout.contains("has no key `secretAccessKey`"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("spec.ses.accessKeyIdSecretRef"),
        "{stdout}"
    );
}
