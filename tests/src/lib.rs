#![forbid(unsafe_code)]
//! End-to-end test support: locate the workspace's real binaries, start the admission webhook
//! on a loopback port with a throwaway CA, talk to it over real TLS, and run the kubectl plugin.
//!
//! The binaries are the ones cargo leaves next to this crate's test executables
//! (`target/<profile>/`): `cargo test --workspace` builds them, because the plugin and the
//! webhook have integration tests of their own.

pub mod controlplane;
pub mod helm;
pub mod walkthrough;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::Value;

/// What can go wrong while driving the binaries.
#[derive(Debug, thiserror::Error)]
pub enum E2eError {
    /// A binary is not built.
    #[error("binary {0} not found; run the tests with `cargo test --workspace`")]
    MissingBinary(PathBuf),
    /// An I/O operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Certificate generation or TLS set-up failed.
    #[error("tls: {0}")]
    Tls(String),
    /// The webhook did not report its addresses in time.
    #[error("karpenter-webhook did not start; its log:\n{0}")]
    NotStarted(String),
    /// The test components could not be built or found.
    #[error("test components: {0}")]
    Components(String),
    /// A command (kubectl, helm, ...) failed.
    #[error("{0}")]
    Command(String),
    /// A response could not be understood.
    #[error("bad response: {0}")]
    BadResponse(String),
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> E2eError {
    let what = what.into();
    move |source| E2eError::Io { what, source }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Path of a workspace binary built in the same profile as the running test.
pub fn binary(name: &str) -> Result<PathBuf, E2eError> {
    // An explicit folder of our binaries (e.g. copies kept apart from a shared target dir).
    if let Some(dir) = std::env::var_os("KARPENTER_E2E_BIN_DIR") {
        let path = PathBuf::from(dir).join(name);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(E2eError::MissingBinary(path))
        };
    }
    let exe = std::env::current_exe().map_err(io("locate the test executable"))?;
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(E2eError::MissingBinary(path))
    }
}

/// Every non-empty document of a (multi-document) YAML file, as JSON values.
pub fn yaml_documents(path: &Path) -> Result<Vec<Value>, E2eError> {
    let text = std::fs::read_to_string(path).map_err(io(format!("read {}", path.display())))?;
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            serde::Deserialize::deserialize(d)
                .map_err(|e| E2eError::BadResponse(format!("{}: {e}", path.display())))
        })
        .filter(|v: &Result<Value, E2eError>| !matches!(v, Ok(Value::Null)))
        .collect()
}

/// Installs the workspace's one rustls crypto provider (aws-lc-rs).
pub fn install_crypto() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A throwaway certificate authority with one serving certificate for `localhost`.
pub struct TestPki {
    /// CA certificate, PEM.
    pub ca_pem: String,
    /// Serving certificate, PEM.
    pub cert_pem: String,
    /// Serving key, PEM.
    pub key_pem: String,
}

// === impl TestPki ===

impl TestPki {
    /// A new CA and a certificate for `localhost` and `127.0.0.1`.
    pub fn new() -> Result<Self, E2eError> {
        let tls = |e: rcgen::Error| E2eError::Tls(e.to_string());
        let ca_key = KeyPair::generate().map_err(tls)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).map_err(tls)?;
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().map_err(tls)?;
        let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .map_err(tls)?
            .signed_by(&key, &issuer)
            .map_err(tls)?;
        Ok(TestPki {
            ca_pem: ca_cert.pem(),
            cert_pem: leaf.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A client configuration trusting only this CA.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, E2eError> {
        let mut roots = RootCertStore::empty();
        let ca = CertificateDer::from_pem_slice(self.ca_pem.as_bytes())
            .map_err(|e| E2eError::Tls(e.to_string()))?;
        roots.add(ca).map_err(|e| E2eError::Tls(e.to_string()))?;
        Ok(Arc::new(
            ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        ))
    }
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

// === impl Scratch ===

impl Scratch {
    /// A new, empty directory under the system temp dir.
    pub fn new(tag: &str) -> Result<Self, E2eError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!(
            "karpenter-e2e-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        Ok(Scratch(dir))
    }

    /// Writes `name` with `contents`, returning its path.
    pub fn write(&self, name: &str, contents: &str) -> Result<PathBuf, E2eError> {
        let path = self.0.join(name);
        std::fs::write(&path, contents).map_err(io(format!("write {}", path.display())))?;
        Ok(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The real `karpenter-webhook`, serving on loopback with the guard off; killed on drop.
pub struct Webhook {
    child: Child,
    /// The HTTPS admission address.
    pub addr: SocketAddr,
    config: Arc<ClientConfig>,
    server_name: String,
    _dir: Scratch,
}

// === impl Webhook ===

impl Webhook {
    /// Starts the webhook with a certificate from `pki` and waits (at most 30 s) for it to listen.
    pub fn start(pki: &TestPki) -> Result<Self, E2eError> {
        Self::start_with(pki, true)
    }

    /// Like [`Webhook::start`]; with `drain_logs` false, its standard error is closed once it
    /// listens, as happens when a log collector goes away.
    pub fn start_with(pki: &TestPki, drain_logs: bool) -> Result<Self, E2eError> {
        let dir = Scratch::new("webhook")?;
        let cert = dir.write("tls.crt", &pki.cert_pem)?;
        let key = dir.write("tls.key", &pki.key_pem)?;
        let mut child = Command::new(binary("karpenter-webhook")?)
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--cluster-autoscaler-guard=off",
                "--log-level=info",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io("start karpenter-webhook"))?;
        let (tx, rx) = mpsc::channel();
        if let Some(stderr) = child.stderr.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() && !drain_logs {
                        break;
                    }
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut log = Vec::new();
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let found = line
                        .contains("serving admission reviews over TLS")
                        .then(|| {
                            line.split_whitespace()
                                .find_map(|w| w.strip_prefix("addr="))
                                .and_then(|a| a.parse::<SocketAddr>().ok())
                        })
                        .flatten();
                    log.push(line);
                    if let Some(a) = found {
                        break a;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(E2eError::NotStarted(log.join("\n")));
                }
            }
        };
        Ok(Webhook {
            child,
            addr,
            config: pki.client_config()?,
            server_name: "localhost".to_string(),
            _dir: dir,
        })
    }

    /// The DNS name [`Webhook::post`] asks for and verifies (`localhost` unless changed).
    pub fn with_server_name(mut self, name: &str) -> Self {
        self.server_name = name.to_string();
        self
    }

    /// POSTs `body` as JSON to `path` over TLS and returns the status and the JSON answer.
    pub fn post(&self, path: &str, body: &Value) -> Result<(u16, Value), E2eError> {
        let body = serde_json::to_vec(body).map_err(|e| E2eError::BadResponse(e.to_string()))?;
        let name = ServerName::try_from(self.server_name.clone())
            .map_err(|e| E2eError::Tls(e.to_string()))?;
        let conn = ClientConnection::new(self.config.clone(), name)
            .map_err(|e| E2eError::Tls(e.to_string()))?;
        let tcp = TcpStream::connect(self.addr).map_err(io("connect to the webhook"))?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(io("set a read timeout"))?;
        let mut tls = StreamOwned::new(conn, tcp);
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.server_name,
            body.len()
        );
        tls.write_all(head.as_bytes())
            .map_err(io("send the request"))?;
        tls.write_all(&body).map_err(io("send the request body"))?;
        tls.flush().map_err(io("send the request"))?;
        let mut raw = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            match tls.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&chunk[..n]),
                // A peer that closes without close_notify after a complete response is fine.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => break,
                Err(e) => {
                    return Err(io(format!(
                        "read the response ({} bytes so far)",
                        raw.len()
                    ))(e))
                }
            }
        }
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| E2eError::BadResponse(text.to_string()))?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| E2eError::BadResponse(head.to_string()))?;
        let json = serde_json::from_str(body)
            .map_err(|e| E2eError::BadResponse(format!("{e}: {body}")))?;
        Ok((status, json))
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `kubectl-karpenter` with `args`.
pub fn plugin(args: &[&str]) -> Result<Output, E2eError> {
    Command::new(binary("kubectl-karpenter")?)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .map_err(io("run kubectl-karpenter"))
}

/// An AdmissionReview CREATE request for a Provisioner object.
pub fn provisioner_review(uid: &str, object: &Value) -> Value {
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "karpenter.sh", "version": "v1alpha5", "kind": "Provisioner"},
            "resource": {"group": "karpenter.sh", "version": "v1alpha5", "resource": "provisioners"},
            "operation": "CREATE",
            "name": object.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
            "object": object,
            "userInfo": {"username": "e2e"}
        }
    })
}

/// Applies the RFC 6902 `add` operations of `patch` to `doc` (the only operation defaulting
/// emits); other operations are an error.
pub fn apply_patch(doc: &mut Value, patch: &Value) -> Result<(), String> {
    for op in patch.as_array().ok_or("patch is not a list")? {
        if op["op"] != "add" {
            return Err(format!("unexpected patch operation {op}"));
        }
        let path = op["path"].as_str().ok_or("patch path is not a string")?;
        let (parent, last) = path.rsplit_once('/').ok_or("patch path has no '/'")?;
        let target = if parent.is_empty() {
            Some(&mut *doc)
        } else {
            doc.pointer_mut(parent)
        }
        .ok_or_else(|| format!("patch parent {parent} does not exist"))?;
        let value = op["value"].clone();
        match target {
            Value::Array(a) if last == "-" => a.push(value),
            Value::Object(m) => {
                m.insert(last.replace("~1", "/").replace("~0", "~"), value);
            }
            other => return Err(format!("cannot add {path} to {other}")),
        }
    }
    Ok(())
}
