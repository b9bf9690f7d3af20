//! Starts the real SMTP server of `tests/smtp_server.py` (aiosmtpd) with certificates from a
//! CA made here. A server that can not start fails the test: it never skips.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A CA and a server certificate for 127.0.0.1 and localhost, as PEM files.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn pki(name: &str) -> Pki {
    pki_for(name, &["localhost", "127.0.0.1"])
}

/// A CA and a server certificate that names only `names` (DNS names or IP addresses).
pub fn pki_for(name: &str, names: &[&str]) -> Pki {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("{name} test CA"));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().expect("server key");
    let mut leaf = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("server params");
    leaf.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("localhost"),
    );
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = leaf.signed_by(&key, &issuer).expect("server certificate");

    let dir = tempfile::tempdir().expect("tempdir");
    let cert_path = dir.path().join("server.pem");
    let key_path = dir.path().join("server.key");
    std::fs::write(&cert_path, cert.pem()).expect("write cert");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");
    Pki {
        dir,
        ca_pem: ca_cert.pem(),
        cert: cert_path,
        key: key_path,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    StartTls,
    Tls,
    None,
}

pub struct Options<'a> {
    pub mode: Mode,
    pub pki: Option<&'a Pki>,
    pub user: Option<(&'a str, &'a str)>,
    pub slow_seconds: f64,
    pub max_connections_per_client: Option<u32>,
}

impl<'a> Options<'a> {
    pub fn new(mode: Mode, pki: Option<&'a Pki>) -> Self {
        Options {
            mode,
            pki,
            user: None,
            slow_seconds: 3.0,
            max_connections_per_client: None,
        }
    }
    pub fn user(mut self, user: &'a str, password: &'a str) -> Self {
        self.user = Some((user, password));
        self
    }
    /// A client with `n` open connections gets a 421 greeting on the next.
    pub fn max_connections_per_client(mut self, n: u32) -> Self {
        self.max_connections_per_client = Some(n);
        self
    }
}

/// A running server; killed when dropped.
pub struct SmtpServer {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl SmtpServer {
    pub fn start(opts: Options<'_>) -> SmtpServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let port_file = dir.path().join("port");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp_server.py");
        let mut cmd = Command::new("python3");
        cmd.arg(&script)
            .arg("--mode")
            .arg(match opts.mode {
                Mode::StartTls => "starttls",
                Mode::Tls => "tls",
                Mode::None => "none",
            })
            .arg("--dir")
            .arg(dir.path())
            .arg("--port-file")
            .arg(&port_file)
            .arg("--slow-seconds")
            .arg(opts.slow_seconds.to_string());
        if let Some(pki) = opts.pki {
            cmd.arg("--cert").arg(&pki.cert).arg("--key").arg(&pki.key);
        }
        if let Some(n) = opts.max_connections_per_client {
            cmd.arg("--max-connections-per-client").arg(n.to_string());
        }
        if let Some((user, password)) = opts.user {
            cmd.arg("--user").arg(user).arg("--password").arg(password);
        }
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr file");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start python3 tests/smtp_server.py (run scripts/install-test-deps.sh)");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(text) = std::fs::read_to_string(&port_file)
                && let Ok(port) = text.trim().parse::<u16>()
            {
                return SmtpServer { child, port, dir };
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log =
                    std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
                panic!("the SMTP test server exited ({status}) before listening:\n{log}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the SMTP test server did not start within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every SMTP event in order: CONNECT, EHLO <name>, AUTH <mech> ok|refused, MAIL ...,
    /// RCPT ..., DATA, RSET, QUIT, DISCONNECT (and REFUSED for a connection over the limit).
    pub fn events(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("events.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Summaries of the received messages, parsed by Python's email package.
    pub fn messages(&self) -> Vec<serde_json::Value> {
        (1..)
            .map(|n| self.dir.path().join(format!("{n}.json")))
            .take_while(|p| p.exists())
            .map(|p| {
                serde_json::from_str(&std::fs::read_to_string(p).expect("read summary"))
                    .expect("summary JSON")
            })
            .collect()
    }

    /// The raw RFC 5322 text of message `n` (1-based).
    pub fn raw(&self, n: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{n}.eml"))).expect("raw message")
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
