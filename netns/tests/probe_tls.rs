//! The health prober against TLS servers: the stand-in API server of `cplb-lab` (with and
//! without a client CA), and certificate files that are missing or garbage.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cplb_lab::apiserver::{self, ApiServerOptions};
use cplb_netns::net::Os;
use cplb_netns::probe::{ClientCert, HttpsProbe, ProbeError, ProbeKind, Prober};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::net::TcpListener;

const SECOND: Duration = Duration::from_secs(1);

fn https(path: &str) -> HttpsProbe {
    HttpsProbe { path: path.into(), client_cert: None, ca: None }
}

async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// Runs `apiserver::serve` in the background; it stops when the handle is aborted or the
/// test's runtime ends.
async fn api_server(
    name: &str,
    tls: bool,
    client_ca: Option<PathBuf>,
) -> (SocketAddr, tokio::task::JoinHandle<io::Result<()>>) {
    let (listener, addr) = listener().await;
    let options = ApiServerOptions { tls, client_ca, ..ApiServerOptions::new(name) };
    (addr, tokio::spawn(apiserver::serve::<Os>(listener, options)))
}

/// A directory under the system temp dir, removed on drop (also when a test fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("cplb-probe-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `ca.pem`, and `client.pem` + `client-key.pem` (an admin-like client certificate
/// signed by that CA).
fn write_client_pki(dir: &TempDir) -> (PathBuf, ClientCert) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.distinguished_name.push(DnType::CommonName, "cplb test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_params(&ca_params, &ca_key);

    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params.distinguished_name.push(DnType::CommonName, "kubernetes-admin");
    client_params.distinguished_name.push(DnType::OrganizationName, "system:masters");
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client_params.signed_by(&client_key, &issuer).unwrap();

    let ca = dir.write("ca.pem", &ca_cert.pem());
    let cert = dir.write("client.pem", &client_cert.pem());
    let key = dir.write("client-key.pem", &client_key.serialize_pem());
    (ca, ClientCert { cert, key })
}

#[tokio::test]
async fn https_probe_against_the_tls_api_server() {
    let (addr, _server) = api_server("controller-1", true, None).await;
    let prober = Prober::new(ProbeKind::Https(https("/healthz"))).unwrap();
    // Shared clones probe concurrently.
    let clone = prober.clone();
    let (a, b) = tokio::join!(clone.probe(addr, SECOND), prober.probe(addr, SECOND));
    a.unwrap();
    b.unwrap();
    assert_eq!(apiserver::fetch(addr, "/", true, SECOND).await.unwrap(), "controller-1\n");
    assert_eq!(apiserver::fetch(addr, "/healthz", true, SECOND).await.unwrap(), "ok");
}

#[tokio::test]
async fn http_probe_against_a_tls_server_says_so() {
    let (addr, _server) = api_server("controller-1", true, None).await;
    let prober = Prober::new(ProbeKind::Http { path: "/healthz".into() }).unwrap();
    let error = prober.probe(addr, SECOND).await.unwrap_err();
    let message = error.to_string();
    assert!(message.starts_with(&format!("GET /healthz on {addr}: ")), "{message}");
    assert!(!matches!(error, ProbeError::Timeout { .. }), "{message}");
    println!("plain HTTP to a TLS server: {message}");
}

#[tokio::test]
async fn https_probe_against_a_plain_server_fails_in_the_handshake() {
    let (addr, _server) = api_server("controller-1", false, None).await;
    let prober = Prober::new(ProbeKind::Https(https("/healthz"))).unwrap();
    let error = prober.probe(addr, SECOND).await.unwrap_err();
    assert!(matches!(error, ProbeError::Tls { .. }), "{error:?}");
    assert!(error.to_string().ends_with("(not a TLS server? probe it over HTTP)"), "{error}");
}

#[tokio::test]
async fn client_certificate_is_required_and_accepted() {
    let dir = TempDir::new();
    let (ca, client) = write_client_pki(&dir);
    let (addr, _server) = api_server("controller-2", true, Some(ca.clone())).await;

    let anonymous = Prober::new(ProbeKind::Https(https("/healthz"))).unwrap();
    let error = anonymous.probe(addr, SECOND).await.unwrap_err();
    assert!(!matches!(error, ProbeError::Timeout { .. }), "{error:?}");
    println!("without a client certificate: {error}");
    assert!(apiserver::fetch(addr, "/", true, SECOND).await.is_err());

    let admin = HttpsProbe { client_cert: Some(client.clone()), ..https("/healthz") };
    Prober::new(ProbeKind::Https(admin)).unwrap().probe(addr, SECOND).await.unwrap();

    // A CA given for the server is used: the server's self-signed certificate fails it.
    let verified = HttpsProbe { client_cert: Some(client), ca: Some(ca), ..https("/healthz") };
    let error =
        Prober::new(ProbeKind::Https(verified)).unwrap().probe(addr, SECOND).await.unwrap_err();
    assert!(matches!(error, ProbeError::Tls { .. }), "{error:?}");
    println!("server verified against the wrong CA: {error}");
}

#[test]
fn missing_or_garbage_files_are_named() {
    let dir = TempDir::new();
    let (_ca, client) = write_client_pki(&dir);
    let garbage = dir.write("garbage.pem", "this is not PEM\n");
    let missing = dir.0.join("missing.pem");
    let with = |cert: &Path, key: &Path, ca: Option<&Path>| {
        let client_cert = Some(ClientCert { cert: cert.into(), key: key.into() });
        let probe = HttpsProbe { client_cert, ca: ca.map(Path::to_path_buf), ..https("/") };
        Prober::new(ProbeKind::Https(probe)).unwrap_err().to_string()
    };

    let message = with(&missing, &client.key, None);
    assert!(message.starts_with("cannot read client certificate "), "{message}");
    assert!(message.contains(&missing.display().to_string()), "{message}");

    let message = with(&garbage, &client.key, None);
    assert_eq!(
        message,
        format!("client certificate {}: holds no PEM CERTIFICATE block", garbage.display())
    );

    let message = with(&client.cert, &garbage, None);
    assert!(message.starts_with(&format!("client key {}: ", garbage.display())), "{message}");

    // A certificate file is not a key, and a key is not a certificate.
    let message = with(&client.cert, &client.cert, None);
    assert!(message.contains("holds no PEM private key"), "{message}");

    let message = with(&client.cert, &client.key, Some(&missing));
    assert!(message.starts_with("cannot read CA bundle "), "{message}");

    let message = with(&client.cert, &client.key, Some(&garbage));
    assert!(message.starts_with(&format!("CA bundle {}: ", garbage.display())), "{message}");

    // A key that does not belong to the certificate.
    let other_key = dir.write("other-key.pem", &KeyPair::generate().unwrap().serialize_pem());
    let message = with(&client.cert, &other_key, None);
    assert!(message.starts_with("client certificate "), "{message}");
    assert!(message.contains(&other_key.display().to_string()), "{message}");
}
