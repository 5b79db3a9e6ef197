//! The cluster's certificates. The city's key set holds one CA key; every server makes the
//! CA's certificate from it, and a certificate of its own signed by it for each run. A
//! connection between servers is TLS 1.3 where both ends show such a certificate: holding the
//! city's key set is what makes a server a member.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The name every member's certificate carries, and the one a forwarder asks for: membership,
/// not the host, is what is checked (servers move between hosts; the lease names the address).
pub(crate) const MEMBER_NAME: &str = "member.citypay-cluster";

/// Why the cluster's TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The CA key or a certificate.
    #[error("cluster certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("cluster TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The client certificate verifier.
    #[error("cluster TLS: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// Both ends of the transport between servers.
#[derive(Clone)]
pub struct ClusterTls {
    pub(crate) server: Arc<ServerConfig>,
    pub(crate) client: Arc<ClientConfig>,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterTls")
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.distinguished_name.push(DnType::CommonName, "citypay cluster CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    params
}

impl ClusterTls {
    /// A new CA key for a city's key set (PKCS#8 DER, ECDSA P-256).
    pub fn new_ca_key() -> Result<Vec<u8>, ClusterError> {
        Ok(KeyPair::generate()?.serialize_der())
    }

    /// The transport of a member whose key set holds `ca_key` (PKCS#8 DER): the CA's
    /// certificate as the only root, and a new certificate of this server's signed by it.
    pub fn from_ca_key(ca_key: &[u8]) -> Result<ClusterTls, ClusterError> {
        let ca_key = KeyPair::try_from(ca_key)?;
        let params = ca_params();
        let ca_certificate = params.self_signed(&ca_key)?;
        let issuer = Issuer::from_params(&params, &ca_key);
        let own_key = KeyPair::generate()?;
        let mut own = CertificateParams::new(vec![MEMBER_NAME.to_owned()])?;
        own.distinguished_name.push(DnType::CommonName, "citypay server");
        own.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let own_certificate = own.signed_by(&own_key, &issuer)?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(ca_certificate.der().clone())?;
        let roots = Arc::new(roots);
        let chain: Vec<CertificateDer<'static>> = vec![own_certificate.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(own_key.serialize_der()));
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build()?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        Ok(ClusterTls { server: Arc::new(server), client: Arc::new(client) })
    }

    pub(crate) fn member_name() -> ServerName<'static> {
        ServerName::try_from(MEMBER_NAME).expect("a valid DNS name")
    }
}
