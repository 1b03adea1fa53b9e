//! The server's TLS: a self-signed certificate made at start, and optionally client
//! certificates required and verified against a CA, as kube-apiserver's `--client-ca-file`.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;

use cplb_netns::probe::{self, ProbeError};
use rustls::ServerConfig;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;

use super::ApiServerOptions;

/// The acceptor for `options` (`None`: plain HTTP), with a certificate for "localhost" and
/// `ip`, the listener's address.
///
/// Fails for client certificates without TLS, and for a client CA file that cannot be read
/// or holds no usable CA certificate.
pub(super) fn acceptor(ip: IpAddr, options: &ApiServerOptions) -> io::Result<Option<TlsAcceptor>> {
    match (options.tls, &options.client_ca) {
        (true, _) => Ok(Some(tls_acceptor(ip, options)?)),
        (false, None) => Ok(None),
        (false, Some(_)) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "client certificates (client_ca) need tls",
        )),
    }
}

fn tls_acceptor(ip: IpAddr, options: &ApiServerOptions) -> io::Result<TlsAcceptor> {
    let invalid = |error: ProbeError| io::Error::new(io::ErrorKind::InvalidData, error);
    let provider = probe::crypto_provider();
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), ip.to_string()])
            .map_err(|error| io::Error::other(format!("making a certificate: {error}")))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der()));
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| io::Error::other(format!("TLS versions: {error}")))?;
    let builder = match &options.client_ca {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in probe::load_certs("client CA", path).map_err(invalid)? {
                roots.add(ca).map_err(|error| {
                    invalid(ProbeError::BadFile {
                        what: "client CA",
                        path: path.clone(),
                        problem: format!("unusable CA certificate: {error}"),
                    })
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|error| {
                    invalid(ProbeError::BadFile {
                        what: "client CA",
                        path: path.clone(),
                        problem: error.to_string(),
                    })
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(vec![cert.der().clone()], key)
        .map_err(|error| io::Error::other(format!("the self-signed certificate: {error}")))?;
    // HTTP/1.1 only: that is what the server speaks (kube-apiserver also offers h2).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
