//! TLS material, loaded at config time: the listener's certificate chain
//! and key (ALPN `h2` and `http/1.1`), and the roots an https upstream is
//! verified against (the system's, or `ca_file`). PEM is parsed with the
//! rustls-pki-types API. aws-lc-rs is the only crypto provider.
//!
//! Depends on rustls, rustls-pki-types and rustls-native-certs.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no PEM certificate found")]
    NoCertificate,
    #[error("not a PEM certificate: {0}")]
    Certificate(rustls_pki_types::pem::Error),
    #[error("not a PEM private key (PKCS#8, PKCS#1 or SEC1): {0}")]
    Key(rustls_pki_types::pem::Error),
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("no usable root certificate in the system store")]
    NoSystemRoots,
    #[error("client CAs: {0}")]
    ClientCas(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsError::Certificate)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    Ok(certs)
}

/// The listener's TLS: this chain and key, HTTP/2 and HTTP/1.1 by ALPN.
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_with_clients(cert_pem, key_pem, None)
}

/// The listener's TLS; with `client_ca_pem`, client certificates issued by
/// those CAs are requested but not required (RFC 8705: a client without
/// one still connects, and only a certificate-bound token then fails).
pub fn server_config_with_clients(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: Option<&[u8]>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = certificates(cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(TlsError::Key)?;
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(pem)? {
                roots.add(cert)?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::ClientCas(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The `x5t#S256` of the first certificate of a PEM text that an ingress
/// or Envoy passed URL-encoded (`%0A`, `%2B`, …; `+` is a literal `+`).
pub fn forwarded_certificate_thumbprint(urlencoded_pem: &str) -> Option<String> {
    let pem = crate::route::percent_decode(urlencoded_pem.trim())?;
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
    Some(crate::dpop::certificate_thumbprint(&der))
}

/// Which certificates an upstream's TLS trusts.
#[derive(Debug, Clone, Copy)]
pub enum Roots<'a> {
    /// The system's store (an https upstream without `ca_file`).
    System,
    /// A PEM bundle (`ca_file`).
    Pem(&'a [u8]),
    /// Nothing at all (an http upstream: TLS is never used).
    None,
}

/// The client TLS for an upstream.
pub fn client_config(trust: Roots<'_>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    match trust {
        Roots::Pem(pem) => {
            for cert in certificates(pem)? {
                roots.add(cert)?;
            }
        }
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsError::NoSystemRoots);
            }
        }
        Roots::None => {}
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
