//! A test PKI made with rcgen: a CA, a server certificate for localhost and
//! 127.0.0.1, and client certificates signed by the same CA.

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};

/// One client certificate: PEM, key PEM, DER.
pub struct Client {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

pub struct Pki {
    pub ca_pem: String,
    /// The server's certificate and key.
    pub cert_pem: String,
    pub key_pem: String,
    pub clients: Vec<Client>,
}

/// A CA, a server certificate and `clients` client certificates.
pub fn pki(clients: usize) -> Pki {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::from_params(&ca, &ca_key);
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let cert = params.signed_by(&key, &issuer).expect("cert");
    let clients = (0..clients)
        .map(|i| {
            let key = KeyPair::generate().expect("key");
            let params = CertificateParams::new(vec![format!("client-{i}")]).expect("params");
            let cert = params.signed_by(&key, &issuer).expect("client cert");
            Client {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
                der: cert.der().to_vec(),
            }
        })
        .collect();
    Pki {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        clients,
    }
}
