//! The cluster PKI: files and modes, issuing, CSR signing, identities in
//! certificates, and real TLS 1.3 handshakes in memory between the
//! configurations `Trust` builds.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConnection, ServerConnection};
use zixiao_auth::{
    AuthError, Authenticator, CertIdentity, ClientAuth, Credentials, ExpectedPeer, Identity,
    NodeKey, NodeName, Pki, PkiError, Rejection, Role, SubjectName, UserName,
};
use zixiao_core::{Clock, ErrorKind};
use zixiao_testing::clock::ManualClock;

use crate::support::Harness;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn node(name: &str) -> NodeName {
    NodeName::try_from(name).unwrap()
}

fn names(names: &[&str]) -> Vec<SubjectName> {
    names.iter().map(|n| n.parse().unwrap()).collect()
}

fn now() -> UnixTime {
    UnixTime::now()
}

/// A node certificate for `name` the way an agent gets one: its own key
/// and CSR, signed by the CA.
fn node_credentials(pki: &Pki, name: &str) -> Credentials {
    let key = NodeKey::generate(&node(name)).unwrap();
    let cert = pki
        .sign_node_csr(key.csr_pem(), &node(name), &names(&["127.0.0.1"]), DAY)
        .unwrap();
    key.with_certificate(&cert).credentials().unwrap()
}

/// Runs a TLS handshake between the two configurations in memory; the
/// client dials `server_name`. Returns the client certificates the server
/// saw, or the first error of either side.
fn handshake(
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
    server_name: &str,
) -> Result<Vec<CertificateDer<'static>>, rustls::Error> {
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    let mut client = ClientConnection::new(client, name)?;
    let mut server = ServerConnection::new(server)?;
    for _ in 0..16 {
        let mut buffer = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buffer).unwrap();
        }
        let mut input = &buffer[..];
        while !input.is_empty() {
            server.read_tls(&mut input).unwrap();
            server.process_new_packets()?;
        }
        let mut buffer = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut buffer).unwrap();
        }
        let mut input = &buffer[..];
        while !input.is_empty() {
            client.read_tls(&mut input).unwrap();
            client.process_new_packets()?;
        }
        if !client.is_handshaking() && !server.is_handshaking() && !client.wants_write() {
            return Ok(server
                .peer_certificates()
                .map(<[_]>::to_vec)
                .unwrap_or_default());
        }
    }
    panic!("the handshake did not finish");
}

#[test]
fn init_writes_the_ca_0600_and_never_overwrites_it() {
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    let pki = Pki::init(&pki_dir, "test").unwrap();
    for file in ["ca.pem", "ca-key.pem"] {
        let mode = std::fs::metadata(pki_dir.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    let dir_mode = std::fs::metadata(&pki_dir).unwrap().permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o700);
    let key_before = std::fs::read(pki_dir.join("ca-key.pem")).unwrap();

    let err = Pki::init(&pki_dir, "test").unwrap_err();
    assert!(matches!(err, PkiError::AlreadyInitialized(_)), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(
        std::fs::read(pki_dir.join("ca-key.pem")).unwrap(),
        key_before
    );
    assert_eq!(
        std::fs::read_to_string(pki_dir.join("ca.pem")).unwrap(),
        pki.ca_pem()
    );
    let debug = format!("{pki:?}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
}

#[test]
fn a_loaded_ca_issues_certificates_that_chain_to_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let first = Pki::init(dir.path(), "test").unwrap();
    let loaded = Pki::load(dir.path()).unwrap();
    assert_eq!(loaded.ca_pem(), first.ca_pem());
    let user = UserName::try_from("alice").unwrap();
    let cert = loaded
        .issue_user(&user, DAY)
        .unwrap()
        .credentials()
        .unwrap();
    // Verified against the CA as `init` wrote it, not as `load` rebuilt it.
    let trust = zixiao_auth::Trust::from_pem(first.ca_pem()).unwrap();
    assert_eq!(
        trust.identify(cert.chain(), now()).unwrap(),
        CertIdentity::User(user)
    );
}

#[test]
fn load_refuses_a_key_that_is_not_the_cas() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    Pki::init(dir.path(), "a").unwrap();
    Pki::init(other.path(), "b").unwrap();
    std::fs::copy(
        other.path().join("ca-key.pem"),
        dir.path().join("ca-key.pem"),
    )
    .unwrap();
    let err = Pki::load(dir.path()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    let missing = tempfile::tempdir().unwrap();
    assert_eq!(
        Pki::load(missing.path()).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn server_and_node_authenticate_each_other_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path(), "test").unwrap();
    let server = pki
        .issue_server(&names(&["127.0.0.1", "zixiao.test", "::1"]), DAY)
        .unwrap()
        .credentials()
        .unwrap();
    let agent = node_credentials(&pki, "worker-1");
    let trust = pki.trust();

    let server_config = trust.server_config(&server, ClientAuth::Required).unwrap();
    let client_config = trust
        .client_config(Some(&agent), ExpectedPeer::Server)
        .unwrap();
    for name in ["127.0.0.1", "zixiao.test", "::1"] {
        let peer = handshake(client_config.clone(), server_config.clone(), name).unwrap();
        assert_eq!(
            trust.identify(&peer, now()).unwrap(),
            CertIdentity::Node(node("worker-1")),
            "dialled {name}"
        );
    }
    // A name the certificate does not hold fails the host name check.
    assert!(handshake(client_config, server_config, "other.test").is_err());
}

#[test]
fn a_server_requiring_client_certificates_refuses_clients_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path(), "test").unwrap();
    let server = pki
        .issue_server(&names(&["127.0.0.1"]), DAY)
        .unwrap()
        .credentials()
        .unwrap();
    let trust = pki.trust();
    let anonymous = trust.client_config(None, ExpectedPeer::Server).unwrap();
    let required = trust.server_config(&server, ClientAuth::Required).unwrap();
    assert!(handshake(anonymous.clone(), required, "127.0.0.1").is_err());
    // An optional one lets it in, with no identity: it must bring a token.
    let optional = trust.server_config(&server, ClientAuth::Optional).unwrap();
    let peer = handshake(anonymous, optional, "127.0.0.1").unwrap();
    assert!(peer.is_empty());
}

#[test]
fn a_certificate_of_another_clusters_ca_is_refused_both_ways() {
    let ours_dir = tempfile::tempdir().unwrap();
    let theirs_dir = tempfile::tempdir().unwrap();
    let ours = Pki::init(ours_dir.path(), "ours").unwrap();
    let theirs = Pki::init(theirs_dir.path(), "theirs").unwrap();
    let server = ours
        .issue_server(&names(&["127.0.0.1"]), DAY)
        .unwrap()
        .credentials()
        .unwrap();
    let intruder = node_credentials(&theirs, "worker-1");

    // Their node dialling our server: the server refuses its certificate.
    let client = ours
        .trust()
        .client_config(Some(&intruder), ExpectedPeer::Server)
        .unwrap();
    let server_config = ours
        .trust()
        .server_config(&server, ClientAuth::Required)
        .unwrap();
    assert!(handshake(client, server_config, "127.0.0.1").is_err());
    // And identifying its chain directly fails.
    let err = ours.trust().identify(intruder.chain(), now()).unwrap_err();
    assert!(matches!(err, Rejection::UntrustedCertificate(_)), "{err:?}");
    // Their server, dialled by our agent: the agent refuses it.
    let their_server = theirs
        .issue_server(&names(&["127.0.0.1"]), DAY)
        .unwrap()
        .credentials()
        .unwrap();
    let agent = node_credentials(&ours, "worker-1");
    let client = ours
        .trust()
        .client_config(Some(&agent), ExpectedPeer::Server)
        .unwrap();
    let server_config = theirs
        .trust()
        .server_config(&their_server, ClientAuth::Optional)
        .unwrap();
    assert!(handshake(client, server_config, "127.0.0.1").is_err());
}

#[test]
fn a_node_certificate_never_passes_for_another_node_or_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path(), "test").unwrap();
    // Node A's agent serves on 127.0.0.1, the address its certificate has.
    let a = node_credentials(&pki, "node-a");
    let agent_server = pki.trust().server_config(&a, ClientAuth::Required).unwrap();
    let server = pki
        .issue_server(&names(&["127.0.0.1"]), DAY)
        .unwrap()
        .credentials()
        .unwrap();
    let dial = |expect| pki.trust().client_config(Some(&server), expect).unwrap();
    assert!(handshake(
        dial(ExpectedPeer::Node(node("node-a"))),
        agent_server.clone(),
        "127.0.0.1"
    )
    .is_ok());
    // A server dialling node B at that address finds node A: refused.
    let err = handshake(
        dial(ExpectedPeer::Node(node("node-b"))),
        agent_server.clone(),
        "127.0.0.1",
    )
    .unwrap_err();
    assert!(err.to_string().contains("zixiao://node/node-a"), "{err}");
    // An agent dialling a server there finds a node: refused, though the
    // address and the CA are right.
    let agent = node_credentials(&pki, "node-c");
    let to_server = pki
        .trust()
        .client_config(Some(&agent), ExpectedPeer::Server)
        .unwrap();
    assert!(handshake(to_server, agent_server, "127.0.0.1").is_err());
}

#[test]
fn a_csr_cannot_ask_to_be_a_server_a_ca_or_someone_else() {
    use rcgen::{CertificateParams, IsCa, KeyPair, SanType};
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path(), "test").unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["evil.test".to_owned()]).unwrap();
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .subject_alt_names
        .push(SanType::URI("zixiao://server".try_into().unwrap()));
    params
        .subject_alt_names
        .push(SanType::URI("zixiao://node/node-b".try_into().unwrap()));
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();

    let cert = pki.sign_node_csr(&csr, &node("node-a"), &[], DAY).unwrap();
    let der = CertificateDer::from_pem_slice_for_test(&cert);
    assert_eq!(
        pki.trust()
            .identify(std::slice::from_ref(&der), now())
            .unwrap(),
        CertIdentity::Node(node("node-a"))
    );
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert!(!parsed.is_ca(), "the CA flag asked for was ignored");
    let text = format!("{:?}", parsed.subject_alternative_name());
    assert!(
        !text.contains("evil.test") && !text.contains("zixiao://server"),
        "{text}"
    );

    // A request whose signature does not match its key is refused.
    let mut tampered = csr.clone();
    tampered.replace_range(100..104, "AAAA");
    let err = pki
        .sign_node_csr(&tampered, &node("node-a"), &[], DAY)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn an_expired_certificate_no_longer_identifies_anyone() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::default());
    let pki = Pki::init_with_clock(dir.path(), "test", clock.clone()).unwrap();
    let user = pki
        .issue_user(&UserName::try_from("alice").unwrap(), DAY)
        .unwrap()
        .credentials()
        .unwrap();
    let at = |offset: Duration| {
        UnixTime::since_unix_epoch(Duration::from_secs(clock.now().timestamp() as u64) + offset)
    };
    assert!(pki
        .trust()
        .identify(user.chain(), at(Duration::ZERO))
        .is_ok());
    let err = pki
        .trust()
        .identify(user.chain(), at(DAY + Duration::from_secs(1)))
        .unwrap_err();
    assert!(matches!(err, Rejection::UntrustedCertificate(_)), "{err:?}");
}

#[test]
fn keys_never_show_in_debug_output() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path(), "test").unwrap();
    let issued = pki.issue_server(&names(&["127.0.0.1"]), DAY).unwrap();
    let key = NodeKey::generate(&node("n")).unwrap();
    for debug in [
        format!("{issued:?}"),
        format!("{:?}", issued.credentials().unwrap()),
        format!("{key:?}"),
    ] {
        assert!(!debug.contains("PRIVATE KEY"), "{debug}");
        assert!(debug.contains("redacted"), "{debug}");
    }
    let (cert, key) = issued.write(dir.path(), "server").unwrap();
    for file in [cert, key] {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }
}

#[tokio::test]
async fn the_authenticator_maps_certificates_to_identities() {
    let h = Harness::new();
    let dir = tempfile::tempdir().unwrap();
    // One clock for issuing and judging: the harness's.
    let pki = Pki::init_with_clock(dir.path(), "test", h.clock.clone()).unwrap();
    let authenticator = Authenticator::new(h.accounts.clone(), Some(pki.trust().clone()));
    let server = pki.issue_server(&names(&["127.0.0.1"]), DAY).unwrap();
    assert_eq!(
        authenticator
            .certificate(server.credentials().unwrap().chain())
            .await
            .unwrap(),
        Identity::Server
    );
    let node_cert = node_credentials(&pki, "worker-1");
    assert_eq!(
        authenticator.certificate(node_cert.chain()).await.unwrap(),
        Identity::Node(node("worker-1"))
    );
    let bob = UserName::try_from("bob").unwrap();
    let bob_cert = pki.issue_user(&bob, DAY).unwrap().credentials().unwrap();
    // A certificate for a user the store does not know: refused.
    let err = authenticator
        .certificate(bob_cert.chain())
        .await
        .unwrap_err();
    assert!(
        matches!(err, AuthError::Unauthenticated(Rejection::UnknownUser(_))),
        "{err:?}"
    );
    h.user("bob", Role::Operator, &["web"]).await;
    match authenticator.certificate(bob_cert.chain()).await.unwrap() {
        Identity::User {
            name,
            role,
            projects,
            ..
        } => {
            assert_eq!(name, bob);
            assert_eq!(role, Role::Operator);
            assert_eq!(projects.len(), 1);
        }
        other => panic!("{other:?}"),
    }
    // Once expired by the authenticator's clock: refused.
    h.clock.advance(DAY * 2);
    assert_eq!(
        authenticator
            .certificate(bob_cert.chain())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Unauthenticated
    );
    // Without a trusted CA, no certificate is accepted.
    let blind = Authenticator::new(h.accounts.clone(), None);
    assert_eq!(
        blind
            .certificate(node_cert.chain())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Unauthenticated
    );
}

/// PEM to DER for tests.
trait FromPemForTest {
    fn from_pem_slice_for_test(pem: &str) -> CertificateDer<'static>;
}

impl FromPemForTest for CertificateDer<'static> {
    fn from_pem_slice_for_test(pem: &str) -> CertificateDer<'static> {
        use rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }
}
