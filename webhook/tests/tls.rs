#![forbid(unsafe_code)]
//! The real binary over real TLS: reviews answered, certificates hot-reloaded, and bad
//! connections answered clearly and in bounded time. Runs with `--cluster-autoscaler-guard=off`
//! and a kubeconfig that does not exist: no cluster access is needed.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{
    der_of, fixture, http_get, read_response, write_request, Conn, TempDir, TestCa, Webhook,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const NAMES: &[&str] = &["localhost", "127.0.0.1"];
/// Upper bound for anything the server should answer quickly.
const BOUND: Duration = Duration::from_secs(10);

struct Setup {
    ca: TestCa,
    dir: TempDir,
    webhook: Webhook,
}

fn start(extra: &[&str]) -> Setup {
    support::install_crypto();
    let ca = TestCa::new();
    let dir = TempDir::new("tls");
    let (cert, key) = ca.issue(NAMES);
    let cert_path = dir.write("tls.crt", &cert);
    let key_path = dir.write("tls.key", &key);
    let mut args = vec![
        "--tls-cert-file".to_string(),
        cert_path.display().to_string(),
        "--tls-key-file".to_string(),
        key_path.display().to_string(),
        "--cluster-autoscaler-guard=off".to_string(),
        "--cert-reload-interval=100ms".to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let webhook = Webhook::start(&args);
    Setup { ca, dir, webhook }
}

#[tokio::test]
async fn serves_reviews_over_tls_and_reloads_the_certificate() {
    let s = start(&[]);
    let config = s.ca.client_config();
    let ready = timeout(BOUND, http_get(s.webhook.admin, "/readyz"))
        .await
        .expect("bounded")
        .expect("readyz");
    assert_eq!(ready.status, 200, "{}", ready.text());

    // Several reviews on one keep-alive connection.
    let mut conn = Conn::connect(s.webhook.tls, config.clone())
        .await
        .expect("TLS handshake");
    let first_cert = conn.peer_certificate().expect("server certificate");
    let valid = conn
        .request(
            "POST",
            "/validate",
            &fixture("provisioner-create-valid.json"),
        )
        .await
        .expect("response");
    assert_eq!(valid.status, 200);
    assert_eq!(valid.json()["response"]["allowed"], true);
    let invalid = conn
        .request(
            "POST",
            "/validate",
            &fixture("provisioner-create-schema-invalid.json"),
        )
        .await
        .expect("response");
    assert_eq!(invalid.json()["response"]["status"]["code"], 422);
    let defaulted = conn
        .request(
            "POST",
            "/default",
            &fixture("provisioner-create-needs-defaults.json"),
        )
        .await
        .expect("response");
    assert_eq!(defaulted.json()["response"]["patchType"], "JSONPatch");

    // Swap the certificate files; new connections get the new certificate.
    let (cert, key) = s.ca.issue(NAMES);
    s.dir.write("tls.key", &key);
    s.dir.write("tls.crt", &cert);
    let want = der_of(&cert);
    assert_ne!(want, first_cert);
    let deadline = Instant::now() + BOUND;
    loop {
        let c = Conn::connect(s.webhook.tls, config.clone())
            .await
            .expect("TLS handshake");
        if c.peer_certificate().as_deref() == Some(&want[..]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new certificate not served; logs:\n{}",
            s.webhook.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The old connection still works.
    let again = conn
        .request(
            "POST",
            "/validate",
            &fixture("provisioner-create-valid.json"),
        )
        .await
        .expect("response");
    assert_eq!(again.status, 200);

    let metrics = http_get(s.webhook.admin, "/metrics")
        .await
        .expect("metrics")
        .text();
    assert!(
        metrics.contains("karpenter_webhook_certificate_reloads_total 1"),
        "{metrics}"
    );
    assert!(metrics
        .contains("karpenter_webhook_requests_total{path=\"/validate\",outcome=\"allowed\"} 2"));
}

#[tokio::test]
async fn a_broken_certificate_update_keeps_the_old_one() {
    let s = start(&[]);
    let config = s.ca.client_config();
    let before = Conn::connect(s.webhook.tls, config.clone())
        .await
        .expect("handshake")
        .peer_certificate();
    s.dir.write("tls.crt", "not a certificate");
    let deadline = Instant::now() + BOUND;
    while !s
        .webhook
        .logs()
        .contains("keeping the previous serving certificate")
    {
        assert!(Instant::now() < deadline, "{}", s.webhook.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = Conn::connect(s.webhook.tls, config)
        .await
        .expect("handshake still works")
        .peer_certificate();
    assert_eq!(before, after);
}

#[tokio::test]
async fn plaintext_on_the_tls_port_gets_a_400() {
    let s = start(&[]);
    let mut tcp = TcpStream::connect(s.webhook.tls).await.expect("connect");
    write_request(&mut tcp, "POST", "/validate", b"{}")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let resp = timeout(BOUND, read_response(&mut tcp, &mut buf))
        .await
        .expect("bounded")
        .expect("a response");
    assert_eq!(resp.status, 400);
    assert!(resp.text().contains("HTTP request to an HTTPS server"));
    let metrics = http_get(s.webhook.admin, "/metrics")
        .await
        .expect("metrics");
    assert!(metrics
        .text()
        .contains("karpenter_webhook_plaintext_connections_total 1"));
}

#[tokio::test]
async fn bad_bodies_get_clear_answers_in_bounded_time() {
    let s = start(&["--request-timeout=1s"]);
    let config = s.ca.client_config();

    // Malformed JSON.
    let mut conn = Conn::connect(s.webhook.tls, config.clone())
        .await
        .expect("handshake");
    let resp = conn
        .request("POST", "/validate", b"{\"apiVersion\": ")
        .await
        .expect("response");
    assert_eq!(resp.status, 400);
    assert!(resp.text().contains("truncated"), "{}", resp.text());

    // 10 MB: 413 with a message, while the client is still sending.
    let mut conn = Conn::connect(s.webhook.tls, config.clone())
        .await
        .expect("handshake");
    let big = vec![b' '; 10 * 1024 * 1024];
    let (mut rd, mut wr) = tokio::io::split(&mut conn.stream);
    let send = async {
        let _ = write_request(&mut wr, "POST", "/validate", &big).await;
    };
    let recv = async {
        let mut buf = Vec::new();
        read_response(&mut rd, &mut buf).await
    };
    let (_, resp) = timeout(BOUND, async { tokio::join!(send, recv) })
        .await
        .expect("bounded");
    let resp = resp.expect("a response");
    assert_eq!(resp.status, 413);
    assert!(
        resp.text().contains("larger than the limit"),
        "{}",
        resp.text()
    );

    // A body shorter than its Content-Length, then silence: 408 after --request-timeout.
    let mut conn = Conn::connect(s.webhook.tls, config.clone())
        .await
        .expect("handshake");
    let head = "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n{\"a\":";
    conn.stream.write_all(head.as_bytes()).await.expect("write");
    conn.stream.flush().await.expect("flush");
    let mut buf = Vec::new();
    let resp = timeout(BOUND, read_response(&mut conn.stream, &mut buf))
        .await
        .expect("bounded")
        .expect("a response");
    assert_eq!(resp.status, 408, "{}", resp.text());

    // A truncated body followed by close: the server answers or closes, never hangs.
    let mut conn = Conn::connect(s.webhook.tls, config.clone())
        .await
        .expect("handshake");
    conn.stream.write_all(head.as_bytes()).await.expect("write");
    conn.stream.shutdown().await.expect("close_notify");
    let mut buf = Vec::new();
    match timeout(BOUND, read_response(&mut conn.stream, &mut buf))
        .await
        .expect("bounded")
    {
        Ok(resp) => assert_eq!(resp.status, 400, "{}", resp.text()),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}"),
    }

    // A client that connects and says nothing is disconnected.
    let mut idle = TcpStream::connect(s.webhook.tls).await.expect("connect");
    let mut byte = [0u8; 1];
    let n = timeout(BOUND, idle.read(&mut byte))
        .await
        .expect("bounded")
        .unwrap_or(0);
    assert_eq!(n, 0);

    // The server is still fine.
    let mut conn = Conn::connect(s.webhook.tls, config)
        .await
        .expect("handshake");
    let resp = conn
        .request(
            "POST",
            "/validate",
            &fixture("provisioner-create-valid.json"),
        )
        .await
        .expect("response");
    assert_eq!(resp.status, 200);
}

#[test]
fn the_guard_needs_cluster_access_and_says_so() {
    support::install_crypto();
    let out = std::process::Command::new(support::BIN)
        .args([
            "--tls-self-signed",
            "--listen=127.0.0.1:0",
            "--admin-listen=127.0.0.1:0",
            "--cluster-autoscaler-guard=deny",
            "--kubeconfig=/nonexistent/kubeconfig",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("failed to configure the Kubernetes client"),
        "{stderr}"
    );
    assert!(stderr.contains("--cluster-autoscaler-guard"), "{stderr}");
}

#[test]
fn help_documents_every_flag_and_the_escape_hatch() {
    let out = std::process::Command::new(support::BIN)
        .arg("--help")
        .output()
        .expect("run");
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--max-body-bytes",
        "--request-timeout",
        "--tls-cert-file",
        "--tls-key-file",
        "--tls-self-signed",
        "--tls-self-signed-name",
        "--cert-reload-interval",
        "--admin-listen",
        "--cluster-autoscaler-guard",
        "--cluster-autoscaler-stale-after",
        "--kubeconfig",
        "--context",
        "--log-level",
        "--log-format",
        "karpenter.sh/allow-with-cluster-autoscaler",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}

/// Accepts any server certificate: only for the self-signed mode, whose certificate nobody can
/// know in advance (in a cluster the caBundle is supplied out of band).
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[tokio::test]
async fn self_signed_mode_serves_reviews_with_the_requested_names() {
    support::install_crypto();
    let webhook = Webhook::start(&[
        "--tls-self-signed",
        "--tls-self-signed-name",
        "karpenter-webhook.e2e-test.svc",
        "--cluster-autoscaler-guard=off",
    ]);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = Arc::new(
        rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth(),
    );
    let ready = timeout(BOUND, http_get(webhook.admin, "/readyz"))
        .await
        .expect("bounded")
        .expect("readyz");
    assert_eq!(ready.status, 200, "{}", ready.text());
    let mut conn = timeout(BOUND, Conn::connect(webhook.tls, config))
        .await
        .expect("bounded")
        .expect("TLS handshake");
    let cert = conn.peer_certificate().expect("a certificate is served");
    // A dNSName SAN is stored as its raw ASCII bytes in the DER.
    let name = b"karpenter-webhook.e2e-test.svc";
    assert!(
        cert.windows(name.len()).any(|w| w == name),
        "the served certificate does not name {}",
        String::from_utf8_lossy(name)
    );
    let answer = timeout(
        BOUND,
        conn.request(
            "POST",
            "/validate",
            &fixture("provisioner-create-valid.json"),
        ),
    )
    .await
    .expect("bounded")
    .expect("response");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["response"]["allowed"], true);
}
