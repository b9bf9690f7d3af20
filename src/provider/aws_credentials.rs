//! AWS credentials for SES: static keys from Secrets, or a small part of the AWS default
//! credential chain, fetched over the shared HTTP client (so the same TLS and time limits
//! apply) and cached until shortly before they expire.
//!
//! The chain, in the SDK's order: environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`), web identity / IRSA (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`
//! through STS `AssumeRoleWithWebIdentity`), and the container credentials endpoint (EKS Pod
//! Identity and ECS: `AWS_CONTAINER_CREDENTIALS_FULL_URI` or `..._RELATIVE_URI`, with
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` or `..._TOKEN`). Shared config files and the EC2
//! instance metadata service are not read.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::error::chain;
use super::secret::LearnedSecrets;
use super::{SecretValue, SendError};

/// Fetched credentials are renewed this long before they expire.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);

/// One set of AWS credentials.
#[derive(Clone)]
pub(crate) struct AwsKeys {
    pub access_key_id: String,
    pub secret_access_key: SecretValue,
    pub session_token: Option<SecretValue>,
    /// When fetched credentials stop working; `None` for static keys.
    pub expires: Option<jiff::Timestamp>,
    /// Where they came from, for messages ("environment", "web identity", ...).
    pub source: &'static str,
}

impl std::fmt::Debug for AwsKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKeys")
            .field("access_key_id", &self.access_key_id)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Reads an environment variable; replaceable in unit tests.
pub(crate) type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

fn process_env() -> Env {
    Arc::new(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
}

/// Why no credentials could be had. `transient` when trying again later may help (an
/// endpoint that did not answer), not when nothing is configured or the role is refused.
#[derive(Debug)]
pub(crate) struct CredentialsError {
    pub message: String,
    pub transient: bool,
}

impl CredentialsError {
    fn permanent(message: impl Into<String>) -> Self {
        CredentialsError {
            message: message.into(),
            transient: false,
        }
    }
    fn transient(message: impl Into<String>) -> Self {
        CredentialsError {
            message: message.into(),
            transient: true,
        }
    }
    pub(crate) fn into_send_error(self) -> SendError {
        if self.transient {
            SendError::transient(self.message)
        } else {
            SendError::permanent(self.message).with_auth()
        }
    }
}

/// Where a provider gets its AWS credentials.
pub(crate) enum AwsCredentials {
    Static(AwsKeys),
    Chain(DefaultChain),
}

impl AwsCredentials {
    pub(crate) async fn get(&self) -> Result<AwsKeys, CredentialsError> {
        match self {
            AwsCredentials::Static(keys) => Ok(keys.clone()),
            AwsCredentials::Chain(chain) => chain.get().await,
        }
    }

    /// Forgets cached credentials (after AWS refused them), so the next call fetches anew.
    pub(crate) async fn invalidate(&self) {
        if let AwsCredentials::Chain(chain) = self {
            *chain.cache.lock().await = None;
        }
    }
}

/// The default chain with its cache.
pub(crate) struct DefaultChain {
    http: reqwest::Client,
    env: Env,
    /// The SES region, used for the regional STS endpoint when `AWS_REGION` is unset.
    region: String,
    cache: tokio::sync::Mutex<Option<AwsKeys>>,
    learned: LearnedSecrets,
}

impl DefaultChain {
    pub(crate) fn new(http: reqwest::Client, region: &str, learned: LearnedSecrets) -> Self {
        Self::with_env(http, region, learned, process_env())
    }

    pub(crate) fn with_env(
        http: reqwest::Client,
        region: &str,
        learned: LearnedSecrets,
        env: Env,
    ) -> Self {
        DefaultChain {
            http,
            env,
            region: region.to_string(),
            cache: tokio::sync::Mutex::new(None),
            learned,
        }
    }

    async fn get(&self) -> Result<AwsKeys, CredentialsError> {
        if let Some(keys) = self.environment_keys() {
            return Ok(keys);
        }
        let mut cache = self.cache.lock().await;
        if let Some(keys) = cache.as_ref()
            && keys.expires.is_none_or(|e| {
                jiff::Timestamp::now()
                    .checked_add(REFRESH_BEFORE_EXPIRY)
                    .is_ok_and(|soon| soon < e)
            })
        {
            return Ok(keys.clone());
        }
        let keys = self.fetch().await?;
        self.learned.learn(keys.secret_access_key.expose());
        if let Some(token) = &keys.session_token {
            self.learned.learn(token.expose());
        }
        *cache = Some(keys.clone());
        Ok(keys)
    }

    fn var(&self, name: &str) -> Option<String> {
        (self.env)(name)
    }

    fn environment_keys(&self) -> Option<AwsKeys> {
        let id = self.var("AWS_ACCESS_KEY_ID")?;
        let secret = self.var("AWS_SECRET_ACCESS_KEY")?;
        self.learned.learn(&secret);
        let token = self.var("AWS_SESSION_TOKEN");
        if let Some(t) = &token {
            self.learned.learn(t);
        }
        Some(AwsKeys {
            access_key_id: id,
            secret_access_key: SecretValue::new(secret),
            session_token: token.map(SecretValue::new),
            expires: None,
            source: "the environment",
        })
    }

    async fn fetch(&self) -> Result<AwsKeys, CredentialsError> {
        if let (Some(token_file), Some(role)) = (
            self.var("AWS_WEB_IDENTITY_TOKEN_FILE"),
            self.var("AWS_ROLE_ARN"),
        ) {
            return self.web_identity(&token_file, &role).await;
        }
        if let Some(url) = self.container_url()? {
            return self.container(&url).await;
        }
        Err(CredentialsError::permanent(
            "no AWS credentials: spec.ses names no access key Secrets, and none of the default chain's sources is set up (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, web identity via AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN (IRSA), or AWS_CONTAINER_CREDENTIALS_FULL_URI (EKS Pod Identity))",
        ))
    }

    /// STS `AssumeRoleWithWebIdentity`, unsigned, with the projected service account token.
    async fn web_identity(
        &self,
        token_file: &str,
        role: &str,
    ) -> Result<AwsKeys, CredentialsError> {
        let token = tokio::fs::read_to_string(token_file).await.map_err(|e| {
            CredentialsError::transient(format!(
                "could not read the web identity token file {token_file} (AWS_WEB_IDENTITY_TOKEN_FILE): {e}"
            ))
        })?;
        let token = token.trim().to_string();
        self.learned.learn(&token);
        let region = self
            .var("AWS_REGION")
            .unwrap_or_else(|| self.region.clone());
        let endpoint = self
            .var("AWS_ENDPOINT_URL_STS")
            .or_else(|| self.var("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com"));
        let session = self
            .var("AWS_ROLE_SESSION_NAME")
            .unwrap_or_else(|| format!("kmailops-{}", jiff::Timestamp::now().as_second()));
        let form = [
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", role),
            ("RoleSessionName", session.as_str()),
            ("WebIdentityToken", token.as_str()),
        ];
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", form_escape(v)))
            .collect::<Vec<_>>()
            .join("&");
        let reply = self
            .http
            .post(format!("{}/", endpoint.trim_end_matches('/')))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/xml")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                CredentialsError::transient(format!(
                    "could not reach AWS STS at {endpoint} for web identity credentials: {}",
                    chain(&e)
                ))
            })?;
        let status = reply.status().as_u16();
        let text = reply.text().await.unwrap_or_default();
        if status != 200 {
            let code = xml_value(&text, "Code").unwrap_or_default();
            let message = xml_value(&text, "Message").unwrap_or_else(|| text.clone());
            let err = format!(
                "AWS STS refused AssumeRoleWithWebIdentity for {role} ({status} {code}): {message}"
            );
            return Err(
                if status >= 500 || code == "IDPCommunicationError" || code == "Throttling" {
                    CredentialsError::transient(err)
                } else {
                    CredentialsError::permanent(err)
                },
            );
        }
        let get = |tag: &str| {
            xml_value(&text, tag).ok_or_else(|| {
                CredentialsError::transient(format!(
                    "AWS STS answered without {tag}: {}",
                    super::http::describe_body(&text)
                ))
            })
        };
        Ok(AwsKeys {
            access_key_id: get("AccessKeyId")?,
            secret_access_key: SecretValue::new(get("SecretAccessKey")?),
            session_token: Some(SecretValue::new(get("SessionToken")?)),
            expires: get("Expiration")?.parse().ok(),
            source: "web identity (IRSA)",
        })
    }

    /// The container credentials endpoint, checked the way the SDK checks it: plain HTTP
    /// only to loopback or the ECS / EKS Pod Identity link-local addresses.
    fn container_url(&self) -> Result<Option<String>, CredentialsError> {
        if let Some(relative) = self.var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
            return Ok(Some(format!("http://169.254.170.2{relative}")));
        }
        let Some(full) = self.var("AWS_CONTAINER_CREDENTIALS_FULL_URI") else {
            return Ok(None);
        };
        let url = reqwest::Url::parse(&full).map_err(|e| {
            CredentialsError::permanent(format!(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI `{full}` is not a URL: {e}"
            ))
        })?;
        let host = url.host_str().unwrap_or_default();
        let allowed_http = match host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
        {
            Ok(std::net::IpAddr::V4(ip)) => {
                ip.is_loopback()
                    || ip == std::net::Ipv4Addr::new(169, 254, 170, 2)
                    || ip == std::net::Ipv4Addr::new(169, 254, 170, 23)
            }
            Ok(std::net::IpAddr::V6(ip)) => {
                ip.is_loopback()
                    || ip == std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23)
            }
            Err(_) => host == "localhost",
        };
        if url.scheme() == "https" || (url.scheme() == "http" && allowed_http) {
            Ok(Some(full))
        } else {
            Err(CredentialsError::permanent(format!(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI `{full}` must be https, or http to a loopback or the EKS Pod Identity / ECS address"
            )))
        }
    }

    async fn container(&self, url: &str) -> Result<AwsKeys, CredentialsError> {
        let token = match self.var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
            Some(file) => Some(
                tokio::fs::read_to_string(&file)
                    .await
                    .map_err(|e| {
                        CredentialsError::transient(format!(
                            "could not read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {file}: {e}"
                        ))
                    })?
                    .trim()
                    .to_string(),
            ),
            None => self.var("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
        };
        let mut req = self.http.get(url).header("accept", "application/json");
        if let Some(token) = &token {
            self.learned.learn(token);
            req = req.header("authorization", token);
        }
        let reply = req.send().await.map_err(|e| {
            CredentialsError::transient(format!(
                "could not reach the container credentials endpoint {url}: {}",
                chain(&e)
            ))
        })?;
        let status = reply.status().as_u16();
        let text = reply.text().await.unwrap_or_default();
        if status != 200 {
            let err = format!(
                "the container credentials endpoint {url} answered {status}: {}",
                super::http::describe_body(&text)
            );
            return Err(if status >= 500 || status == 429 {
                CredentialsError::transient(err)
            } else {
                CredentialsError::permanent(err)
            });
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Container {
            access_key_id: String,
            secret_access_key: String,
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            expiration: Option<String>,
        }
        let c: Container = serde_json::from_str(&text).map_err(|e| {
            CredentialsError::transient(format!(
                "the container credentials endpoint {url} answered something else than credentials ({e})"
            ))
        })?;
        Ok(AwsKeys {
            access_key_id: c.access_key_id,
            secret_access_key: SecretValue::new(c.secret_access_key),
            session_token: c.token.map(SecretValue::new),
            expires: c.expiration.and_then(|e| e.parse().ok()),
            source: "the container credentials endpoint (EKS Pod Identity)",
        })
    }
}

/// `application/x-www-form-urlencoded` escaping.
fn form_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The text of the first `<tag>...</tag>` in an XML answer, entities decoded. STS answers
/// are small and flat enough that this is all the XML reading needed.
fn xml_value(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(
        xml[start..end]
            .trim()
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&'static str, &'static str)]) -> Env {
        let vars: Vec<(&'static str, &'static str)> = vars.to_vec();
        Arc::new(move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    fn chain_with(vars: &[(&'static str, &'static str)]) -> DefaultChain {
        DefaultChain::with_env(
            crate::provider::http_client(),
            "eu-west-1",
            LearnedSecrets::default(),
            env(vars),
        )
    }

    #[tokio::test]
    async fn environment_keys_come_first() {
        let keys = chain_with(&[
            ("AWS_ACCESS_KEY_ID", "AKIAENV"),
            ("AWS_SECRET_ACCESS_KEY", "secret-env"),
            ("AWS_SESSION_TOKEN", "tok"),
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:1/x"),
        ])
        .get()
        .await
        .expect("env keys");
        assert_eq!(keys.access_key_id, "AKIAENV");
        assert_eq!(
            keys.session_token.as_ref().map(SecretValue::expose),
            Some("tok")
        );
    }

    #[tokio::test]
    async fn nothing_configured_is_a_permanent_error_naming_the_options() {
        let err = chain_with(&[]).get().await.expect_err("nothing");
        assert!(!err.transient);
        assert!(
            err.message.contains("accessKeyIdSecretRef")
                || err.message.contains("access key Secrets")
        );
        assert!(err.message.contains("AWS_WEB_IDENTITY_TOKEN_FILE"));
    }

    #[test]
    fn the_container_endpoint_must_be_local_or_https() {
        for ok in [
            "http://169.254.170.23/v1/credentials",
            "http://127.0.0.1:8080/creds",
            "https://creds.example.com/x",
        ] {
            let c = chain_with(&[("AWS_CONTAINER_CREDENTIALS_FULL_URI", ok)]);
            assert!(c.container_url().expect(ok).is_some());
        }
        let c = chain_with(&[(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://evil.example.com/",
        )]);
        assert!(c.container_url().is_err());
    }

    #[test]
    fn sts_xml_values_are_read_and_unescaped() {
        let xml = "<R><Credentials><SessionToken>a&amp;b</SessionToken><AccessKeyId>ASIA1</AccessKeyId></Credentials></R>";
        assert_eq!(xml_value(xml, "SessionToken").as_deref(), Some("a&b"));
        assert_eq!(xml_value(xml, "AccessKeyId").as_deref(), Some("ASIA1"));
        assert_eq!(xml_value(xml, "Nope"), None);
        assert_eq!(form_escape("a b/c=d"), "a%20b%2Fc%3Dd");
    }
}
