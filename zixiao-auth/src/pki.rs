//! The cluster PKI, in pure Rust (rcgen to make certificates, rustls on
//! ring to use them; no OpenSSL, no external tool).
//!
//! A [`Pki`] owns the cluster CA (`ca.pem` and `ca-key.pem` in a directory
//! of mode 0700, both files 0600) and issues certificates: a server's for
//! its DNS names and addresses, a node's from the agent's certificate
//! signing request, a user's. A [`Trust`] holds only the CA certificate:
//! it verifies peers and builds the `rustls` configurations servers,
//! agents and clients need.
//!
//! # Identity in a certificate
//!
//! Each leaf names exactly one identity in a URI subject alternative name,
//! in the manner of SPIFFE ids: `zixiao://server`, `zixiao://node/<name>`,
//! `zixiao://user/<name>` (see [`CertIdentity`]). The common name repeats
//! it for people and is never read. A URI SAN was chosen over a DNS SAN
//! `node:<name>` because DNS SANs are what hostname verification matches:
//! an identity there could be confused with a host name, a URI cannot.
//!
//! A node certificate is built from the request's public key alone: the
//! names, extensions and CA flag an agent asks for are ignored, so an agent
//! cannot ask to be a server, another node or a CA. Whoever signs decides
//! the node name (from the join token's use) and the addresses.
//!
//! Server and node certificates allow both TLS server and client use
//! (servers call agents, agents call servers); user certificates only
//! client use. Clients pin the identity they expect of a server
//! ([`ExpectedPeer`]) on top of the usual host name check, so a node's
//! certificate never passes for a server's, nor for another node's, even
//! on a machine that runs both.

use std::fmt;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use zeroize::Zeroizing;
use zixiao_core::{Clock, ErrorKind, SystemClock};

use crate::error::Rejection;
use crate::files;
use crate::names::{NodeName, UserName};

/// The CA certificate's file name in a PKI directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA key's file name in a PKI directory.
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// How long a new cluster CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How far back a new certificate's validity starts, so a peer whose clock
/// is a little behind accepts it at once.
const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
/// The scheme of every identity URI.
const SCHEME: &str = "zixiao://";

/// Why a certificate could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("cannot {action} `{path}`")]
    Io {
        /// What was attempted (`write`).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `init` found a CA in place: it never overwrites one.
    #[error("a cluster CA exists already at `{0}`; refusing to overwrite it")]
    AlreadyInitialized(PathBuf),
    /// rcgen could not make or sign a certificate.
    #[error("cannot {what}")]
    Certificate {
        /// What was attempted (`sign the node certificate`).
        what: &'static str,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
    /// An input (a PEM, a CSR, a name) is not what it must be.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What (`certificate signing request`).
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// rustls refused the certificates or key.
    #[error("cannot build the TLS configuration")]
    Tls(#[source] rustls::Error),
    /// rustls could not build a verifier on the CA.
    #[error("cannot build a certificate verifier on the cluster CA")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
}

impl PkiError {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PkiError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            PkiError::AlreadyInitialized(_) => ErrorKind::AlreadyExists,
            PkiError::Invalid { .. } => ErrorKind::InvalidArgument,
            PkiError::Io { .. }
            | PkiError::Certificate { .. }
            | PkiError::Tls(_)
            | PkiError::Verifier(_) => ErrorKind::Internal,
        }
    }

    fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        PkiError::Invalid {
            what,
            reason: reason.into(),
        }
    }
}

fn rcgen_error(what: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |source| PkiError::Certificate { what, source }
}

/// The identity a certificate names (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CertIdentity {
    /// A server replica: `zixiao://server`.
    Server,
    /// A node's agent: `zixiao://node/<name>`.
    Node(NodeName),
    /// A user: `zixiao://user/<name>`.
    User(UserName),
}

impl CertIdentity {
    /// The identity's URI.
    ///
    /// ```
    /// use zixiao_auth::{CertIdentity, NodeName};
    /// let node = CertIdentity::Node(NodeName::try_from("worker-1").unwrap());
    /// assert_eq!(node.uri(), "zixiao://node/worker-1");
    /// assert_eq!(CertIdentity::parse_uri("zixiao://node/worker-1"), Some(node));
    /// assert_eq!(CertIdentity::parse_uri("zixiao://node/../server"), None);
    /// ```
    pub fn uri(&self) -> String {
        match self {
            CertIdentity::Server => format!("{SCHEME}server"),
            CertIdentity::Node(name) => format!("{SCHEME}node/{name}"),
            CertIdentity::User(name) => format!("{SCHEME}user/{name}"),
        }
    }

    /// The identity a URI names, if it is one.
    pub fn parse_uri(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix(SCHEME)?;
        if rest == "server" {
            return Some(CertIdentity::Server);
        }
        let (kind, name) = rest.split_once('/')?;
        match kind {
            "node" => NodeName::try_from(name).ok().map(CertIdentity::Node),
            "user" => UserName::try_from(name).ok().map(CertIdentity::User),
            _ => None,
        }
    }

    fn common_name(&self) -> String {
        match self {
            CertIdentity::Server => "zixiao server".to_owned(),
            CertIdentity::Node(name) => format!("zixiao node {name}"),
            CertIdentity::User(name) => format!("zixiao user {name}"),
        }
    }

    /// The identity a DER certificate names: exactly one `zixiao://` URI
    /// SAN. Does not verify the certificate.
    pub fn of_certificate(der: &CertificateDer<'_>) -> Result<Self, Rejection> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| Rejection::UntrustedCertificate(format!("unreadable: {e}")))?;
        let sans = cert
            .subject_alternative_name()
            .map_err(|e| Rejection::UntrustedCertificate(format!("unreadable names: {e}")))?;
        let mut found = None;
        for name in sans.iter().flat_map(|ext| ext.value.general_names.iter()) {
            if let x509_parser::extensions::GeneralName::URI(uri) = name {
                if uri.starts_with(SCHEME) {
                    if found.is_some() {
                        // Two identities in one certificate: trust neither.
                        return Err(Rejection::NoCertificateIdentity);
                    }
                    found =
                        Some(CertIdentity::parse_uri(uri).ok_or(Rejection::NoCertificateIdentity)?);
                }
            }
        }
        found.ok_or(Rejection::NoCertificateIdentity)
    }
}

impl fmt::Display for CertIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

/// A DNS name or an IP address a server or node certificate is valid for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SubjectName {
    /// A DNS name (`zixiao.example.com`, `localhost`).
    Dns(String),
    /// An IP address.
    Ip(IpAddr),
}

impl FromStr for SubjectName {
    type Err = PkiError;

    /// An IP address if it parses as one, else a lowercase DNS name.
    ///
    /// ```
    /// use zixiao_auth::SubjectName;
    /// assert!(matches!("10.0.0.1".parse(), Ok(SubjectName::Ip(_))));
    /// assert!(matches!("api.example.com".parse(), Ok(SubjectName::Dns(_))));
    /// assert!("exa mple".parse::<SubjectName>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, PkiError> {
        if let Ok(ip) = s.parse() {
            return Ok(SubjectName::Ip(ip));
        }
        let label_ok = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        };
        if s.len() <= 253 && s.split('.').all(label_ok) {
            Ok(SubjectName::Dns(s.to_owned()))
        } else {
            Err(PkiError::invalid(
                "subject name",
                format!("`{s}` is neither an IP address nor a lowercase DNS name"),
            ))
        }
    }
}

impl SubjectName {
    fn san(&self) -> Result<SanType, PkiError> {
        Ok(match self {
            SubjectName::Dns(name) => SanType::DnsName(
                name.as_str()
                    .try_into()
                    .map_err(|_| PkiError::invalid("subject name", "not ASCII"))?,
            ),
            SubjectName::Ip(ip) => SanType::IpAddress(*ip),
        })
    }
}

/// A certificate chain (leaf first) and its private key, as rustls takes
/// them. Its `Debug` shows no key.
pub struct Credentials {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Credentials {
    /// From a PEM chain (leaf first) and a PEM private key. Errors:
    /// `InvalidArgument`.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PkiError::invalid("certificate", e.to_string()))?;
        if chain.is_empty() {
            return Err(PkiError::invalid(
                "certificate",
                "no certificate in the PEM",
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| PkiError::invalid("private key", e.to_string()))?;
        Ok(Credentials { chain, key })
    }

    /// From a PEM certificate file and a PEM key file. Errors: `NotFound`,
    /// `InvalidArgument`, `Internal` (unreadable).
    pub fn load(cert: &Path, key: &Path) -> Result<Self, PkiError> {
        let key_pem = Zeroizing::new(read(key)?);
        Credentials::from_pem(&read(cert)?, &key_pem)
    }

    /// The chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The identity the leaf names (unverified: the holder's own view).
    pub fn identity(&self) -> Result<CertIdentity, Rejection> {
        CertIdentity::of_certificate(&self.chain[0])
    }
}

impl Clone for Credentials {
    fn clone(&self) -> Self {
        Credentials {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("certificates", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// A certificate just issued and the private key made for it. Its `Debug`
/// shows no key; the key is wiped from memory on drop.
#[derive(Clone)]
pub struct IssuedCertificate {
    cert_pem: String,
    key_pem: Zeroizing<String>,
}

impl IssuedCertificate {
    /// The certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The private key, PEM: write it only where its owner alone reads.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Both, as rustls takes them.
    pub fn credentials(&self) -> Result<Credentials, PkiError> {
        Credentials::from_pem(&self.cert_pem, &self.key_pem)
    }

    /// Writes `<stem>.pem` and `<stem>-key.pem` into `dir`, both 0600,
    /// replacing older ones (certificates are renewed in place).
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf), PkiError> {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}-key.pem"));
        write_private(&key, self.key_pem.as_bytes(), false)?;
        write_private(&cert, self.cert_pem.as_bytes(), false)?;
        Ok((cert, key))
    }
}

impl fmt::Debug for IssuedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCertificate")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// An agent's new key pair and its certificate signing request, made on
/// the agent so the private key never leaves the node.
pub struct NodeKey {
    csr_pem: String,
    key_pem: Zeroizing<String>,
}

impl NodeKey {
    /// A new key for node `node` and a request naming it. The request's
    /// names are only a courtesy: the signer decides (see
    /// [`Pki::sign_node_csr`]).
    pub fn generate(node: &NodeName) -> Result<Self, PkiError> {
        let key = KeyPair::generate().map_err(rcgen_error("generate a node key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let identity = CertIdentity::Node(node.clone());
        params
            .distinguished_name
            .push(DnType::CommonName, identity.common_name());
        let csr = params
            .serialize_request(&key)
            .map_err(rcgen_error("make the certificate signing request"))?;
        Ok(NodeKey {
            csr_pem: csr
                .pem()
                .map_err(rcgen_error("encode the certificate signing request"))?,
            key_pem: Zeroizing::new(key.serialize_pem()),
        })
    }

    /// The certificate signing request to send to a server, PEM.
    pub fn csr_pem(&self) -> &str {
        &self.csr_pem
    }

    /// The private key, PEM.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// This key with the certificate the server signed.
    pub fn with_certificate(&self, cert_pem: &str) -> IssuedCertificate {
        IssuedCertificate {
            cert_pem: cert_pem.to_owned(),
            key_pem: self.key_pem.clone(),
        }
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKey")
            .field("csr_pem", &self.csr_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Whether a server demands a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Every client must present a certificate of the cluster CA (an
    /// agent's port: only servers call it).
    Required,
    /// A client may present one; without one it must bring a token (a
    /// server's port: users come with tokens, agents with certificates).
    Optional,
    /// A client may present a certificate of any issuer: the handshake
    /// checks only that the client holds its key, and the chain is judged
    /// at each call ([`Trust::identify`], through the `Authenticator`), so a
    /// certificate of another CA is refused as `Unauthenticated` and
    /// recorded like any other refusal, instead of ending the connection
    /// unexplained. No identity comes from a certificate but through
    /// `identify`.
    PerCall,
}

/// The client verification of [`ClientAuth::PerCall`]: the webpki
/// verifier's hints and signature checks, and any chain accepted in the
/// handshake (it is verified per call).
#[derive(Debug)]
struct PerCallClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for PerCallClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Which identity a client requires of the server it dials, on top of the
/// host name check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectedPeer {
    /// A server replica (agents and users dialling a server).
    Server,
    /// That node's agent (a server dialling an agent).
    Node(NodeName),
}

impl ExpectedPeer {
    fn accepts(&self, identity: &CertIdentity) -> bool {
        match (self, identity) {
            (ExpectedPeer::Server, CertIdentity::Server) => true,
            (ExpectedPeer::Node(want), CertIdentity::Node(got)) => want == got,
            _ => false,
        }
    }
}

impl fmt::Display for ExpectedPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedPeer::Server => CertIdentity::Server.fmt(f),
            ExpectedPeer::Node(node) => CertIdentity::Node(node.clone()).fmt(f),
        }
    }
}

/// The cluster CA's certificate, and what verifies peers against it.
/// Cheap to clone.
#[derive(Clone)]
pub struct Trust {
    ca: CertificateDer<'static>,
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    clients: Arc<dyn ClientCertVerifier>,
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trust").finish_non_exhaustive()
    }
}

/// The one crypto provider of this crate: ring, named explicitly, so a
/// binary that also links aws-lc-rs does not have to pick a process default.
// rustls deprecates ring's provider for lacking post-quantum key exchange
// (X25519MLKEM768 needs aws-lc-rs, a C library with a long build). The
// classical suites it has are sound; moving to aws-lc-rs is this one line.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Cluster traffic is TLS 1.3 only: every client is ours or a current
/// gRPC stack.
static VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

impl Trust {
    /// Trusts the CA certificate in `pem`. Errors: `InvalidArgument`.
    pub fn from_pem(pem: &str) -> Result<Self, PkiError> {
        let ca = CertificateDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| PkiError::invalid("CA certificate", e.to_string()))?;
        Trust::from_der(ca)
    }

    /// Trusts the CA certificate in PEM file `path`.
    pub fn load(path: &Path) -> Result<Self, PkiError> {
        Trust::from_pem(&read(path)?)
    }

    fn from_der(ca: CertificateDer<'static>) -> Result<Self, PkiError> {
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.clone())
            .map_err(|e| PkiError::invalid("CA certificate", e.to_string()))?;
        let roots = Arc::new(roots);
        let provider = provider();
        let clients = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(PkiError::Verifier)?;
        Ok(Trust {
            ca,
            roots,
            provider,
            clients,
        })
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca
    }

    /// The CA certificate's fingerprint, `sha256:<64 hex digits>`: what a
    /// joining agent is given beside its join token, to check the CA a
    /// server sends before trusting it (as kubeadm's CA cert hash).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let pki = zixiao_auth::Pki::init(dir.path(), "test").unwrap();
    /// let fingerprint = pki.trust().fingerprint();
    /// assert!(fingerprint.starts_with("sha256:") && fingerprint.len() == 7 + 64);
    /// let again = zixiao_auth::Trust::from_pem(pki.ca_pem()).unwrap();
    /// assert_eq!(again.fingerprint(), fingerprint);
    /// ```
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        format!(
            "sha256:{}",
            crate::token::hex(&sha2::Sha256::digest(&self.ca))
        )
    }

    /// The identity a TLS peer's chain (leaf first) names, once the chain
    /// is verified: it leads to the cluster CA, is valid at `now`, and is
    /// meant for a TLS client. Errors: [`Rejection::UntrustedCertificate`],
    /// [`Rejection::NoCertificateIdentity`].
    pub fn identify(
        &self,
        chain: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<CertIdentity, Rejection> {
        let (leaf, intermediates) = chain.split_first().ok_or(Rejection::NoCredentials)?;
        self.clients
            .verify_client_cert(leaf, intermediates, now)
            .map_err(|e| Rejection::UntrustedCertificate(e.to_string()))?;
        CertIdentity::of_certificate(leaf)
    }

    /// A TLS server configuration presenting `credentials` and verifying
    /// client certificates on the cluster CA, required or optional (or
    /// per call, see [`ClientAuth::PerCall`]). ALPN offers `h2` (gRPC).
    pub fn server_config(
        &self,
        credentials: &Credentials,
        client_auth: ClientAuth,
    ) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let builder =
            WebPkiClientVerifier::builder_with_provider(self.roots.clone(), self.provider.clone());
        let verifier = match client_auth {
            ClientAuth::Required => builder.build(),
            ClientAuth::Optional => builder.allow_unauthenticated().build(),
            ClientAuth::PerCall => builder
                .allow_unauthenticated()
                .build()
                .map(|inner| Arc::new(PerCallClientVerifier { inner }) as _),
        }
        .map_err(PkiError::Verifier)?;
        let credentials = credentials.clone();
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(VERSIONS)
            .map_err(PkiError::Tls)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(credentials.chain, credentials.key)
            .map_err(PkiError::Tls)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// A TLS client configuration trusting only the cluster CA, requiring
    /// the server to be `expect`, and presenting `credentials` if given.
    /// ALPN offers `h2` (gRPC).
    pub fn client_config(
        &self,
        credentials: Option<&Credentials>,
        expect: ExpectedPeer,
    ) -> Result<Arc<rustls::ClientConfig>, PkiError> {
        let inner =
            WebPkiServerVerifier::builder_with_provider(self.roots.clone(), self.provider.clone())
                .build()
                .map_err(PkiError::Verifier)?;
        let verifier = Arc::new(PinnedServerVerifier { inner, expect });
        // `dangerous` only because the verifier is our own type: it runs
        // the standard webpki verification first and adds a check.
        let builder = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(VERSIONS)
            .map_err(PkiError::Tls)?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match credentials {
            Some(credentials) => {
                let credentials = credentials.clone();
                builder
                    .with_client_auth_cert(credentials.chain, credentials.key)
                    .map_err(PkiError::Tls)?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The standard server verification (chain to the CA, validity, host
/// name), then: the leaf must name the expected identity.
#[derive(Debug)]
struct PinnedServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    expect: ExpectedPeer,
}

/// A server whose certificate names another identity than the one wanted.
#[derive(Debug, thiserror::Error)]
#[error("the server's certificate names {found}, not {expected}")]
struct WrongPeer {
    expected: String,
    found: String,
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let found = CertIdentity::of_certificate(end_entity).map_err(|e| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
        })?;
        if !self.expect.accepts(&found) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(WrongPeer {
                    expected: self.expect.to_string(),
                    found: found.to_string(),
                })),
            )));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The cluster CA and its key: issues every certificate of the cluster.
/// Lives only on servers. Its `Debug` shows no key.
pub struct Pki {
    dir: PathBuf,
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    trust: Trust,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for Pki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Pki {
    /// Creates a new cluster CA for `cluster` (a name for people, in the
    /// CA's subject) in `dir` (made 0700 if missing): `ca-key.pem` and
    /// `ca.pem`, both 0600. Refuses to overwrite either file. Errors:
    /// `AlreadyExists`, `Internal` (I/O).
    pub fn init(dir: &Path, cluster: &str) -> Result<Self, PkiError> {
        Pki::init_with_clock(dir, cluster, Arc::new(SystemClock))
    }

    /// [`Pki::init`] with an injected clock (for the validity period).
    pub fn init_with_clock(
        dir: &Path,
        cluster: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, PkiError> {
        create_private_dir(dir)?;
        let (cert_path, key_path) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
        for path in [&cert_path, &key_path] {
            if path.exists() {
                return Err(PkiError::AlreadyInitialized(path.clone()));
            }
        }
        let key = KeyPair::generate().map_err(rcgen_error("generate the CA key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, cluster);
        params
            .distinguished_name
            .push(DnType::CommonName, "zixiao cluster CA");
        // The CA signs leaves only: no intermediate CA can be made under it.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, clock.as_ref(), CA_VALIDITY)?;
        let cert = params
            .self_signed(&key)
            .map_err(rcgen_error("self-sign the CA certificate"))?;
        let key_pem = Zeroizing::new(key.serialize_pem());
        // `create_new` makes the refusal race-free: two inits at once
        // cannot both write.
        write_private(&key_path, key_pem.as_bytes(), true)?;
        if let Err(e) = write_private(&cert_path, cert.pem().as_bytes(), true) {
            let _ = fs::remove_file(&key_path);
            return Err(e);
        }
        let trust = Trust::from_der(cert.der().clone())?;
        Ok(Pki {
            dir: dir.to_owned(),
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
            trust,
            clock,
        })
    }

    /// Loads the cluster CA from `dir`. Errors: `NotFound`,
    /// `InvalidArgument` (unreadable PEM, or a key that is not the
    /// certificate's), `Internal`.
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        Pki::load_with_clock(dir, Arc::new(SystemClock))
    }

    /// [`Pki::load`] with an injected clock.
    pub fn load_with_clock(dir: &Path, clock: Arc<dyn Clock>) -> Result<Self, PkiError> {
        let ca_pem = read(&dir.join(CA_CERT_FILE))?;
        let key_pem = Zeroizing::new(read(&dir.join(CA_KEY_FILE))?);
        let key =
            KeyPair::from_pem(&key_pem).map_err(|e| PkiError::invalid("CA key", e.to_string()))?;
        let trust = Trust::from_pem(&ca_pem)?;
        let (_, cert) = x509_parser::parse_x509_certificate(trust.ca_der())
            .map_err(|e| PkiError::invalid("CA certificate", e.to_string()))?;
        if cert.tbs_certificate.subject_pki.raw
            != rcgen::PublicKeyData::subject_public_key_info(&key)
        {
            return Err(PkiError::invalid(
                "CA key",
                format!("`{CA_KEY_FILE}` is not the key of `{CA_CERT_FILE}`"),
            ));
        }
        if !cert.is_ca() {
            return Err(PkiError::invalid("CA certificate", "it is not a CA"));
        }
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, key)
            .map_err(|e| PkiError::invalid("CA certificate", e.to_string()))?;
        Ok(Pki {
            dir: dir.to_owned(),
            ca_pem,
            issuer,
            trust,
            clock,
        })
    }

    /// The directory it lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate, PEM: what agents and clients are given.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// What verifies peers against this CA.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// A server certificate (`zixiao://server`) for `names`, valid for
    /// `validity`. Errors: `InvalidArgument` (no names), `Internal`.
    pub fn issue_server(
        &self,
        names: &[SubjectName],
        validity: Duration,
    ) -> Result<IssuedCertificate, PkiError> {
        if names.is_empty() {
            return Err(PkiError::invalid(
                "subject names",
                "a server certificate needs at least one DNS name or address",
            ));
        }
        let key = KeyPair::generate().map_err(rcgen_error("generate a server key"))?;
        let params = self.leaf_params(&CertIdentity::Server, names, validity)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(rcgen_error("sign the server certificate"))?;
        Ok(IssuedCertificate {
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
        })
    }

    /// A user's client certificate (`zixiao://user/<name>`), valid for
    /// `validity`. The user's role and projects are not in it: they are
    /// read from the store at each call, so a change applies at once.
    pub fn issue_user(
        &self,
        user: &UserName,
        validity: Duration,
    ) -> Result<IssuedCertificate, PkiError> {
        let key = KeyPair::generate().map_err(rcgen_error("generate a user key"))?;
        let params = self.leaf_params(&CertIdentity::User(user.clone()), &[], validity)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(rcgen_error("sign the user certificate"))?;
        Ok(IssuedCertificate {
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
        })
    }

    /// Signs an agent's certificate signing request (see [`NodeKey`]) into
    /// a node certificate for `node`, valid for `names` and `validity`.
    /// Only the request's public key is used (after checking its
    /// signature): its names and extensions are ignored. The caller has
    /// authenticated the agent first (a join token's use, or the node's
    /// current certificate for a renewal). Returns the certificate, PEM.
    /// Errors: `InvalidArgument` (not a CSR, or a bad signature),
    /// `Internal`.
    pub fn sign_node_csr(
        &self,
        csr_pem: &str,
        node: &NodeName,
        names: &[SubjectName],
        validity: Duration,
    ) -> Result<String, PkiError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::invalid("certificate signing request", e.to_string()))?;
        let params = self.leaf_params(&CertIdentity::Node(node.clone()), names, validity)?;
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(rcgen_error("sign the node certificate"))?;
        Ok(cert.pem())
    }

    fn leaf_params(
        &self,
        identity: &CertIdentity,
        names: &[SubjectName],
        validity: Duration,
    ) -> Result<CertificateParams, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, identity.common_name());
        params.subject_alt_names = vec![SanType::URI(
            identity
                .uri()
                .try_into()
                .map_err(|_| PkiError::invalid("identity", "not ASCII"))?,
        )];
        for name in names {
            params.subject_alt_names.push(name.san()?);
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match identity {
            CertIdentity::User(_) => vec![ExtendedKeyUsagePurpose::ClientAuth],
            CertIdentity::Server | CertIdentity::Node(_) => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        };
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, self.clock.as_ref(), validity)?;
        Ok(params)
    }
}

/// Sets a random serial and the validity `[now - skew, now + validity]`.
fn set_validity(
    params: &mut CertificateParams,
    clock: &dyn Clock,
    validity: Duration,
) -> Result<(), PkiError> {
    let now = time::OffsetDateTime::from_unix_timestamp(clock.now().timestamp())
        .map_err(|e| PkiError::invalid("clock", e.to_string()))?;
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + validity;
    let mut serial = [0u8; 16];
    getrandom::fill(&mut serial).map_err(|e| PkiError::invalid("random source", e.to_string()))?;
    // A positive, non-zero serial of at most 20 bytes (RFC 5280).
    serial[0] = (serial[0] & 0x7f) | 0x01;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    Ok(())
}

fn read(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })
}

/// Creates `dir` 0700 if missing.
fn create_private_dir(dir: &Path) -> Result<(), PkiError> {
    files::create_private_dir(dir).map_err(|source| PkiError::Io {
        action: "create directory",
        path: dir.to_owned(),
        source,
    })
}

/// Writes a file 0600 (see [`files::write_private`]).
fn write_private(path: &Path, contents: &[u8], exclusive: bool) -> Result<(), PkiError> {
    files::write_private(path, contents, exclusive).map_err(|source| {
        if exclusive && source.kind() == io::ErrorKind::AlreadyExists {
            PkiError::AlreadyInitialized(path.to_owned())
        } else {
            PkiError::Io {
                action: "write",
                path: path.to_owned(),
                source,
            }
        }
    })
}
