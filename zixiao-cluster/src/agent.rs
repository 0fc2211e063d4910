//! `zixiao agent`: the node side. It registers its node with a server,
//! keeps the node's liveness lease alive with heartbeats (rotating through
//! the servers it knows when one fails), pets the node's watchdog after each
//! renewal it sends, serves the AgentService for the servers' controllers,
//! and after a restart or a lost lease re-adopts the instances that are
//! still its own and removes the copies that now live elsewhere. With a
//! network host it also sets the cluster's networks up on the node. Its
//! tie to the cluster is the MembershipService; where an instance is
//! placed, and draining its node, it asks through the user-facing `Api`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use zixiao_api::agent::{AgentServer, StoredInstances, StoredNetworks};
use zixiao_api::membership::MembershipClient;
use zixiao_api::network::NETWORKS_TRAIT;
use zixiao_core::host_usage::HostSampler;
use zixiao_core::model::{
    InstanceUuid, Network, NetworkName, Onboarding, OnboardingState, OrphanSweep,
};
use zixiao_core::{
    Client, DriverError, Error, ErrorKind, Instance, InstanceType, LocalAgent, NetworkHost,
    NodeAgent, NodeRegistration, NodeRole, Result,
};

use crate::election::wait;
use crate::onboarding::SmokeTest;
use crate::records::{RecordingAgent, Records};
use crate::timing::{monotonic_ms, Timing};
use crate::watchdog::WatchdogFiles;

/// How an agent runs.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The node's name (a DNS label), unique in the cluster.
    pub name: String,
    /// The servers' endpoints (`host:port` or `http://host:port`), tried in turn.
    pub servers: Vec<String>,
    /// Region of the node.
    pub region: String,
    /// Zone of the node.
    pub zone: String,
    /// Labels of the node.
    pub labels: BTreeMap<String, String>,
    /// Where the AgentService listens (port 0: any free port).
    pub listen: SocketAddr,
    /// The `host:port` servers dial to reach it; defaults to the listen
    /// address (the hostname when listening on every interface).
    pub advertise: Option<String>,
    /// The node's state: its session, instance records, watchdog files.
    pub state_dir: PathBuf,
    /// Liveness settings (must match the servers').
    pub timing: Timing,
    /// The cluster's TLS: with it the agent joins (once) and then calls
    /// the servers and serves them over mutual TLS with its node
    /// certificate. Without it, plain gRPC (loopback only, or
    /// `--insecure-no-tls`).
    pub tls: Option<AgentTls>,
    /// What the AgentService's listener grants its peers (connections,
    /// calls, time).
    pub limits: zixiao_api::Limits,
    /// The smoke test the node passes before it takes work (the default
    /// only checks each runtime answers).
    pub onboarding: SmokeTest,
}

/// How an agent proves it is its node to a TLS cluster.
#[derive(Clone)]
pub struct AgentTls {
    /// The cluster CA certificate, PEM: the servers must present a server
    /// certificate it signed.
    pub ca_pem: String,
    /// A join token: needed only while the state directory holds no node
    /// certificate yet (the first start).
    pub join_token: Option<String>,
    /// A node certificate expiring within this long is renewed (with the
    /// current certificate, no token): at the agent's start, and while it
    /// runs.
    pub renew_before: Duration,
    /// How often a running agent looks at its certificate's expiry.
    pub renew_check: Duration,
}

/// The default of [`AgentTls::renew_before`]: 30 days.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// The default of [`AgentTls::renew_check`]: hourly.
pub const RENEW_CHECK: Duration = Duration::from_secs(3600);

impl std::fmt::Debug for AgentTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentTls")
            .field(
                "join_token",
                &self.join_token.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

/// The node certificate's file in the state directory (its key:
/// `node-key.pem`), both 0600.
pub const NODE_CERT_FILE: &str = "node.pem";
/// The node key's file in the state directory.
pub const NODE_KEY_FILE: &str = "node-key.pem";

/// An agent's TLS identity: its node certificate and the CA it trusts.
#[derive(Clone)]
struct NodeTls {
    trust: zixiao_auth::Trust,
    credentials: zixiao_auth::Credentials,
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

/// Names the certificate's node only: the key never reaches a log.
impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTls")
            .field("identity", &self.credentials.identity().ok())
            .finish_non_exhaustive()
    }
}

impl NodeTls {
    /// A client configuration for calling servers with the node's certificate.
    fn to_servers(&self) -> Result<Arc<rustls::ClientConfig>> {
        Ok(self
            .trust
            .client_config(Some(&self.credentials), zixiao_auth::ExpectedPeer::Server)
            .map_err(zixiao_auth::AuthError::from)?)
    }

    /// The agent's listener's configuration: its node certificate, and a
    /// client certificate of the cluster required of every caller.
    fn server_config(&self) -> Result<Arc<rustls::ServerConfig>> {
        Ok(self
            .trust
            .server_config(&self.credentials, zixiao_auth::ClientAuth::Required)
            .map_err(zixiao_auth::AuthError::from)?)
    }

    /// A user-API client of `server` as this node.
    fn client_of(&self, server: &str) -> Result<Client> {
        zixiao_api::secure::connect_with(zixiao_api::secure::ConnectOptions {
            endpoint: server.to_owned(),
            ca_pem: Some(self.ca_pem.clone()),
            token: None,
            client_identity: Some((self.cert_pem.clone(), self.key_pem.clone())),
        })
    }
}

/// The node's certificate while the agent runs: every call to a server
/// and every connection a server makes to the agent uses the current one,
/// and [`keep_renewed`] replaces it before it expires.
struct NodeCert {
    current: std::sync::RwLock<Arc<NodeTls>>,
    /// Bumped at each renewal, so holders of clients built with an older
    /// certificate build new ones.
    generation: AtomicU64,
    /// The agent's listener takes each new connection under the current value.
    serving: watch::Sender<Arc<rustls::ServerConfig>>,
}

impl NodeCert {
    fn new(tls: NodeTls) -> Result<Self> {
        let serving = watch::Sender::new(tls.server_config()?);
        Ok(NodeCert {
            current: std::sync::RwLock::new(Arc::new(tls)),
            generation: AtomicU64::new(0),
            serving,
        })
    }

    fn current(&self) -> Arc<NodeTls> {
        // A poisoned lock still holds a whole certificate: it is only ever
        // replaced, never changed in place.
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Makes `renewed` the certificate of every call and connection from now on.
    fn replace(&self, renewed: NodeTls) -> Result<()> {
        let config = renewed.server_config()?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(renewed);
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.serving.send_replace(config);
        Ok(())
    }
}

impl std::fmt::Debug for NodeCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCert")
            .field("current", &self.current())
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

/// Where and how a running agent renews its node certificate.
struct Renewal {
    cert: Arc<NodeCert>,
    node: zixiao_auth::NodeName,
    state_dir: PathBuf,
    servers: Vec<String>,
    advertise_host: String,
    renew_before: Duration,
    check: Duration,
}

/// Renews the node certificate whenever it is found within
/// `renew_before` of its expiry, every `check`, until shutdown. A failed
/// renewal is logged and tried again at the next check; the current
/// certificate stays in use meanwhile.
async fn keep_renewed(renewal: Renewal, mut shutdown: watch::Receiver<bool>) {
    loop {
        wait(&mut shutdown, renewal.check).await;
        if *shutdown.borrow() {
            return;
        }
        let current = renewal.cert.current();
        let Ok(expires) = current.credentials.not_after() else {
            continue;
        };
        let left = expires - chrono::Utc::now().timestamp();
        if u64::try_from(left).is_ok_and(|left| Duration::from_secs(left) > renewal.renew_before) {
            continue;
        }
        let renewed = renew(
            &current,
            &renewal.node,
            &renewal.state_dir,
            &renewal.servers,
            &renewal.advertise_host,
        )
        .await
        .and_then(|renewed| renewal.cert.replace(renewed));
        if let Err(e) = renewed {
            tracing::warn!(
                "renewing node `{}`'s certificate (valid {left} more s): {}",
                renewal.node,
                e.chain()
            );
        }
    }
}

/// The node's certificate from `state_dir`, or, on the first start, a new
/// key whose certificate request is exchanged with `tls.join_token` at the
/// first server that answers; the certificate and key are then kept 0600
/// in `state_dir`. Errors: `InvalidArgument` (no certificate and no token,
/// a certificate of another node or CA), `Unauthenticated` (the token),
/// `Unavailable`.
async fn node_tls(
    tls: &AgentTls,
    node: &str,
    state_dir: &Path,
    servers: &[String],
    advertise_host: &str,
) -> Result<NodeTls> {
    use zixiao_auth::{AuthError, CertIdentity, ExpectedPeer, NodeKey, NodeName, Trust};
    let trust = Trust::from_pem(&tls.ca_pem).map_err(AuthError::from)?;
    let name = NodeName::try_from(node).map_err(|e| Error::invalid("name", e.to_string()))?;
    let (cert_path, key_path) = (
        state_dir.join(NODE_CERT_FILE),
        state_dir.join(NODE_KEY_FILE),
    );
    let stored = cert_path.exists() && key_path.exists();
    let (cert_pem, key_pem) = if stored {
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .map_err(|e| Error::Internal(format!("cannot read {}: {e}", path.display())))
        };
        (read(&cert_path)?, read(&key_path)?)
    } else {
        let token = tls.join_token.as_deref().ok_or_else(|| {
            Error::invalid(
                "join_token",
                format!(
                    "`{}` holds no node certificate yet: give a join token (zixiao token \
                     create --role agent) to join the cluster",
                    state_dir.display()
                ),
            )
        })?;
        let started = Instant::now();
        let key = NodeKey::generate(&name).map_err(AuthError::from)?;
        let anonymous = trust
            .client_config(None, ExpectedPeer::Server)
            .map_err(AuthError::from)?;
        let mut last = None;
        let mut joined = None;
        for server in servers {
            let client = MembershipClient::new_tls(
                server,
                Duration::from_secs(10),
                Some(anonymous.clone()),
            )?;
            let addresses = vec![advertise_host.to_owned()];
            match client
                .join_cluster(token, node, key.csr_pem(), addresses)
                .await
            {
                Ok(answer) => {
                    joined = Some(answer);
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Unavailable => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        let Some((cert_pem, ca_pem)) = joined else {
            return Err(last.unwrap_or_else(|| Error::invalid("servers", "none is configured")));
        };
        if Trust::from_pem(&ca_pem)
            .map_err(AuthError::from)?
            .fingerprint()
            != trust.fingerprint()
        {
            return Err(Error::invalid(
                "ca_cert",
                "the server answered with another cluster CA than the one given",
            ));
        }
        let issued = key.with_certificate(&cert_pem);
        std::fs::create_dir_all(state_dir)
            .map_err(|e| Error::Internal(format!("cannot create {}: {e}", state_dir.display())))?;
        issued.write(state_dir, "node").map_err(AuthError::from)?;
        tracing::info!(
            node = %node,
            "joined the cluster in {} ms; its certificate is in {}",
            started.elapsed().as_millis(),
            cert_path.display()
        );
        (cert_pem, issued.key_pem().to_owned())
    };
    let credentials =
        zixiao_auth::Credentials::from_pem(&cert_pem, &key_pem).map_err(AuthError::from)?;
    match credentials.identity() {
        Ok(CertIdentity::Node(named)) if named == name => {}
        other => {
            return Err(Error::invalid(
                "name",
                format!(
                    "`{}` is not node `{node}`'s certificate ({other:?}): use this node's \
                     state directory",
                    cert_path.display()
                ),
            ))
        }
    }
    let current = NodeTls {
        trust,
        credentials,
        ca_pem: tls.ca_pem.clone(),
        cert_pem,
        key_pem,
    };
    let expires = current.credentials.not_after().map_err(AuthError::from)?;
    let now = chrono::Utc::now().timestamp();
    let left = Duration::from_secs(u64::try_from(expires - now).unwrap_or(0));
    if !stored || left > tls.renew_before {
        return Ok(current);
    }
    match renew(&current, &name, state_dir, servers, advertise_host).await {
        Ok(renewed) => Ok(renewed),
        // Still valid: run on with it, and try again at the next start.
        Err(e) if expires > now => {
            tracing::warn!(
                node = %node,
                "renewing node `{node}`'s certificate (valid {} more s): {}",
                expires - now,
                e.chain()
            );
            Ok(current)
        }
        Err(e) => Err(e),
    }
}

/// A new key and certificate for the node, asked with its current
/// certificate, kept in `state_dir` in place of the old ones.
async fn renew(
    current: &NodeTls,
    node: &zixiao_auth::NodeName,
    state_dir: &Path,
    servers: &[String],
    advertise_host: &str,
) -> Result<NodeTls> {
    use zixiao_auth::{AuthError, NodeKey};
    let key = NodeKey::generate(node).map_err(AuthError::from)?;
    let mut last = None;
    for server in servers {
        let client = MembershipClient::new_tls(
            server,
            Duration::from_secs(10),
            Some(current.to_servers()?),
        )?;
        let answer = client
            .renew_node_certificate(
                node.as_str(),
                key.csr_pem(),
                vec![advertise_host.to_owned()],
            )
            .await;
        match answer {
            Ok((cert_pem, _)) => {
                let issued = key.with_certificate(&cert_pem);
                let credentials = issued.credentials().map_err(AuthError::from)?;
                issued.write(state_dir, "node").map_err(AuthError::from)?;
                tracing::info!(node = %node, "renewed its certificate");
                return Ok(NodeTls {
                    credentials,
                    cert_pem,
                    key_pem: issued.key_pem().to_owned(),
                    ..current.clone()
                });
            }
            Err(e) if e.kind() == ErrorKind::Unavailable => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::invalid("servers", "none is configured")))
}

/// Lets through only calls from a server of the cluster (the TLS handshake
/// already required a certificate of the cluster CA).
fn servers_only(
    request: tonic::Request<()>,
) -> std::result::Result<tonic::Request<()>, tonic::Status> {
    let leaf = request
        .extensions()
        .get::<zixiao_api::tls::TlsPeer>()
        .and_then(|peer| peer.certificates.as_ref().and_then(|c| c.first().cloned()));
    let identity = leaf.as_ref().map(zixiao_auth::CertIdentity::of_certificate);
    match identity {
        Some(Ok(zixiao_auth::CertIdentity::Server)) => Ok(request),
        Some(Ok(other)) => Err(tonic::Status::permission_denied(format!(
            "only a zixiao server calls an agent; the caller is {other}"
        ))),
        _ => Err(tonic::Status::unauthenticated(
            "a server certificate of this cluster is required",
        )),
    }
}

/// A running agent.
#[derive(Debug)]
pub struct AgentHandle {
    addr: SocketAddr,
    name: String,
    session: String,
    servers: Vec<String>,
    state_dir: PathBuf,
    /// The node's certificate on a TLS cluster: its leave is called with it.
    tls: Option<Arc<NodeCert>>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl AgentHandle {
    /// Where its AgentService listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops heartbeating and serving. The node's watchdog (if one runs)
    /// fences the instances once the fencing deadline passes.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }

    /// Leaves the cluster on purpose: drains the node (its instances move
    /// or stop), deregisters it, stops its watchdog, then shuts down.
    /// Errors: the drain's or the deregistration's.
    pub async fn leave(self) -> Result<()> {
        let mut last = None;
        for server in &self.servers {
            // On a TLS cluster the node's certificate is its identity, and
            // the one user call it may make is draining itself.
            let tls = self.tls.as_ref().map(|cert| cert.current());
            let client = match &tls {
                Some(tls) => tls.client_of(server)?,
                None => zixiao_api::connect(server)?,
            };
            match client.drain_node(&self.name).await {
                Ok(_) => {
                    let tls = tls.as_deref().map(NodeTls::to_servers).transpose()?;
                    MembershipClient::new_tls(server, Duration::from_secs(120), tls)?
                        .leave_cluster(&self.name, &self.session)
                        .await?;
                    WatchdogFiles::new(&self.state_dir).request_stop()?;
                    self.shutdown().await;
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Unavailable => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::invalid("servers", "no server is configured")))
    }

    /// Waits until the agent stops.
    pub async fn wait(mut self) {
        if let Some(task) = self.tasks.pop() {
            let _ = task.await;
        }
    }
}

/// The agent's session id, kept in its state directory so a restarted agent
/// takes its node's lease back. Errors: `Internal` (unwritable directory).
pub fn session(state_dir: &Path) -> Result<String> {
    let path = state_dir.join("agent-session");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim();
        if !existing.is_empty() {
            return Ok(existing.to_owned());
        }
    }
    let fresh = uuid::Uuid::new_v4().to_string();
    std::fs::create_dir_all(state_dir)
        .and_then(|()| std::fs::write(&path, &fresh))
        .map_err(|e| Error::Internal(format!("cannot write {}: {e}", path.display())))?;
    Ok(fresh)
}

/// The host part of `host:port` (an IPv6 address without its brackets).
fn advertise_host(address: &str) -> String {
    let host = match address.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => address,
    };
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

/// When the node last sent a renewal that succeeded (monotonic ms; 0: never).
#[derive(Debug, Default)]
struct Liveness {
    renewed_ms: AtomicU64,
}

/// Starts the agent of `local`'s drivers, without networks. Errors:
/// `InvalidArgument` (options, an address that cannot be bound), `Internal`
/// (state directory).
pub async fn start(options: AgentOptions, local: LocalAgent) -> Result<AgentHandle> {
    start_with_network(options, local, None).await
}

pub use zixiao_net::Underlay;

/// This machine's networks (zixiao-net's LinuxNetwork) in the calling
/// thread's network namespace, containers' namespaces pinned under
/// `netns_dir`, with `underlay` as its address between nodes (networks'
/// VXLAN overlays; `None`: it cannot carry a network that spans nodes).
/// Must be called inside a tokio runtime. Errors: `Internal` (no netlink
/// socket).
pub fn linux_network(netns_dir: &Path, underlay: Option<Underlay>) -> Result<Arc<dyn NetworkHost>> {
    let host = zixiao_net::LinuxNetwork::connect(netns_dir)?;
    Ok(Arc::new(match underlay {
        Some(underlay) => host.with_underlay(underlay),
        None => host,
    }))
}

/// The node's registration as its agent makes it: what the machine
/// reports (its drivers, and the facts found on it), with the labels of
/// the agent's configuration added (a configured label wins a key both
/// have: the operator who wrote the configuration said so).
fn registration_with_labels(local: &LocalAgent, options: &AgentOptions) -> NodeRegistration {
    let mut registration = local.registration(options.name.clone());
    registration.labels.extend(options.labels.clone());
    registration
}

/// Starts the agent like [`start`]; with `network`, the node declares the
/// [`NETWORKS_TRAIT`] and sets the cluster's networks up through it (the
/// servers ask it to when networks are created or deleted, and reconcile
/// its devices with the store each time it registers).
pub async fn start_with_network(
    options: AgentOptions,
    local: LocalAgent,
    network: Option<Arc<dyn NetworkHost>>,
) -> Result<AgentHandle> {
    options.timing.validate()?;
    if options.servers.is_empty() {
        return Err(Error::invalid(
            "servers",
            "at least one server endpoint is needed",
        ));
    }
    // Checked before anything is bound or written: a bad name changes nothing.
    NodeRegistration {
        region: options.region.clone(),
        zone: options.zone.clone(),
        ..registration_with_labels(&local, &options)
    }
    .validate()?;
    let session = session(&options.state_dir)?;
    let listener = TcpListener::bind(options.listen).await.map_err(|e| {
        Error::invalid(
            "listen",
            format!("cannot listen on {}: {e}", options.listen),
        )
    })?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Internal(format!("listener address: {e}")))?;
    let advertise = options.advertise.clone().unwrap_or_else(|| {
        if addr.ip().is_unspecified() {
            format!("{}:{}", local.describe_now().hostname, addr.port())
        } else {
            addr.to_string()
        }
    });
    let mut registration = NodeRegistration {
        address: advertise,
        region: options.region.clone(),
        zone: options.zone.clone(),
        role: NodeRole::Worker,
        ..registration_with_labels(&local, &options)
    };
    if network.is_some() {
        registration.traits.insert(NETWORKS_TRAIT.to_owned());
    }
    // Registered `onboarding` until the smoke test says otherwise (or
    // `ready` at once when it is skipped).
    registration.onboarding = Some(options.onboarding.start());
    registration.validate()?;
    let (node_tls, renewal) = match &options.tls {
        Some(tls) => {
            let host = advertise_host(&registration.address);
            let cert = Arc::new(NodeCert::new(
                node_tls(
                    tls,
                    &options.name,
                    &options.state_dir,
                    &options.servers,
                    &host,
                )
                .await?,
            )?);
            let renewal = Renewal {
                cert: cert.clone(),
                node: zixiao_auth::NodeName::try_from(options.name.as_str())
                    .map_err(|e| Error::invalid("name", e.to_string()))?,
                state_dir: options.state_dir.clone(),
                servers: options.servers.clone(),
                advertise_host: host,
                renew_before: tls.renew_before,
                check: tls.renew_check,
            };
            (Some(cert), Some(renewal))
        }
        None => (None, None),
    };

    let records = Records::new(&options.state_dir);
    // The smoke test uses the drivers directly: its instances are in no record.
    let local = Arc::new(local);
    let agent = Arc::new(RecordingAgent::new(local.clone(), records.clone()));
    let placement = Arc::new(ClusterPlacement::new(
        &options.name,
        &options.servers,
        node_tls.clone(),
    ));
    let liveness = Arc::new(Liveness::default());
    let fence_ms = options.timing.fence_after_ms;
    let gate_liveness = liveness.clone();
    let name = options.name.clone();
    let gate = Arc::new(move || {
        let renewed = gate_liveness.renewed_ms.load(Ordering::SeqCst);
        if renewed == 0 || monotonic_ms().saturating_sub(renewed) > fence_ms {
            return Err(DriverError::FailedPrecondition(format!(
                "node `{name}` is fenced: it has not renewed its lease within {fence_ms} ms, so \
                 its instances may run elsewhere"
            )));
        }
        Ok(())
    });
    let listed = records.clone();
    let mut service = AgentServer::new(agent.clone())
        .with_stored_instances(placement.clone())
        .with_stored_networks(placement)
        .with_gate(gate)
        .with_local_instances(Arc::new(move || listed.list()));
    if let Some(network) = network {
        service = service.with_network_host(network);
    }
    let mut routes = tonic::service::Routes::builder();
    let server_config = match &node_tls {
        Some(cert) => {
            routes.add_service(tonic::service::interceptor::InterceptedService::new(
                service.into_service(),
                servers_only,
            ));
            Some(cert.serving.subscribe())
        }
        None => {
            routes.add_service(service.into_service());
            None
        }
    };
    zixiao_api::add_standard_services(&mut routes, &[zixiao_api::agent::SERVICE]).await?;
    let routes = routes.routes();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut stop = shutdown_rx.clone();
    let limits = options.limits;
    let serve = tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|stop| *stop).await;
        };
        let server = limits.server().add_routes(routes);
        let served = match server_config {
            Some(configs) => {
                let incoming = zixiao_api::tls::incoming_reloading(listener, configs, &limits);
                server.serve_with_incoming_shutdown(incoming, stopped).await
            }
            None => {
                server
                    .serve_with_incoming_shutdown(
                        zixiao_api::limits::plain_incoming(listener, &limits),
                        stopped,
                    )
                    .await
            }
        };
        if let Err(e) = served {
            tracing::warn!("serving: {e}");
        }
    });
    let lifeline = Lifeline {
        registration,
        session: session.clone(),
        servers: options.servers.clone(),
        timing: options.timing,
        tls: node_tls.clone(),
        agent,
        records,
        liveness,
        watchdog: WatchdogFiles::new(&options.state_dir),
        smoke: options.onboarding.clone(),
        local,
    };
    let mut tasks = Vec::new();
    if let Some(renewal) = renewal {
        tasks.push(tokio::spawn(keep_renewed(renewal, shutdown_rx.clone())));
    }
    // The lifeline, then the server last: `wait` waits for the server.
    tasks.push(tokio::spawn(lifeline.run(shutdown_rx)));
    tasks.push(serve);
    Ok(AgentHandle {
        addr,
        name: options.name,
        session,
        servers: options.servers,
        state_dir: options.state_dir,
        tls: node_tls,
        shutdown: shutdown_tx,
        tasks,
    })
}

/// Registration, heartbeats, petting and clean-up: the agent's tie to the cluster.
struct Lifeline {
    registration: NodeRegistration,
    session: String,
    servers: Vec<String>,
    timing: Timing,
    tls: Option<Arc<NodeCert>>,
    agent: Arc<RecordingAgent>,
    records: Records,
    liveness: Arc<Liveness>,
    watchdog: WatchdogFiles,
    smoke: SmokeTest,
    /// The node's drivers, unrecorded: what the smoke test boots on.
    local: Arc<LocalAgent>,
}

/// A task aborted when its handle is dropped: the smoke test stops with
/// the lifeline that started it.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the smoke test found, once it ends; never, when none runs.
async fn finished(
    smoke: &mut Option<AbortOnDrop<Onboarding>>,
) -> std::result::Result<Onboarding, tokio::task::JoinError> {
    let Some(task) = smoke.as_mut() else {
        return std::future::pending().await;
    };
    let done = (&mut task.0).await;
    *smoke = None;
    done
}

impl Lifeline {
    /// Whether the smoke test still has to report.
    fn onboarding(&self) -> bool {
        self.registration
            .onboarding
            .as_ref()
            .is_some_and(|o| o.state == OnboardingState::Running)
    }

    /// Starts the smoke test of the runtimes the node registered.
    fn start_smoke_test(&self) -> AbortOnDrop<Onboarding> {
        let smoke = self.smoke.clone();
        let local = self.local.clone();
        let node = self.registration.id.clone();
        let offered = self.registration.runtimes.clone();
        let started = self
            .registration
            .onboarding
            .clone()
            .unwrap_or_else(|| smoke.start());
        AbortOnDrop(tokio::spawn(async move {
            smoke.run(&node, &*local, &offered, started).await
        }))
    }

    fn renewed(&self, sent_ms: u64) {
        self.liveness.renewed_ms.store(sent_ms, Ordering::SeqCst);
        if let Err(e) = self.watchdog.pet(sent_ms) {
            tracing::warn!("{}", e.chain());
        }
    }

    fn membership(&self, server: &str, timeout: Duration) -> Result<MembershipClient> {
        let tls = self
            .tls
            .as_ref()
            .map(|cert| cert.current().to_servers())
            .transpose()?;
        MembershipClient::new_tls(server, timeout, tls)
    }

    fn client(&self, index: usize) -> Option<MembershipClient> {
        let server = &self.servers[index % self.servers.len()];
        match self.membership(server, self.timing.heartbeat()) {
            Ok(client) => Some(client),
            Err(e) => {
                tracing::warn!("server `{server}`: {}", e.chain());
                None
            }
        }
    }

    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let node = self.registration.id.clone();
        let mut smoke = None;
        let mut server = 0usize;
        let clients: Vec<Option<MembershipClient>> =
            (0..self.servers.len()).map(|i| self.client(i)).collect();
        let register_clients: Vec<Option<MembershipClient>> = self
            .servers
            .iter()
            .map(|s| self.membership(s, Duration::from_secs(5)).ok())
            .collect();
        while !*shutdown.borrow() {
            // Register (again), with the session that may still hold the lease.
            let sent = monotonic_ms();
            let Some(client) = &register_clients[server % self.servers.len()] else {
                server += 1;
                continue;
            };
            let lease = match client
                .register_node(&self.registration, &self.session)
                .await
            {
                Ok((_, lease)) => lease,
                Err(e) => {
                    tracing::warn!(node = %node, "registering: {}", e.chain());
                    if e.kind() == ErrorKind::Unavailable {
                        server += 1;
                    }
                    wait(&mut shutdown, self.timing.heartbeat()).await;
                    continue;
                }
            };
            self.renewed(sent);
            tracing::info!(
                node = %node,
                "registered with `{}`",
                self.servers[server % self.servers.len()]
            );
            // The clean-up (and its orphan sweep, which would take a smoke
            // instance for an orphan) waits for the smoke test to end.
            let onboarding = self.onboarding();
            if onboarding && smoke.is_none() {
                smoke = Some(self.start_smoke_test());
            }
            let cleanup = (!onboarding).then(|| {
                tokio::spawn(clean_up(
                    ClusterPlacement::new(&node, &self.servers, self.tls.clone()),
                    self.agent.clone(),
                    self.records.clone(),
                    SweepReport {
                        session: self.session.clone(),
                        clients: register_clients.iter().flatten().cloned().collect(),
                    },
                ))
            });
            // Heartbeat until the lease is lost. A round in which no server
            // answered is retried at once (every server may be waiting for
            // etcd to elect a leader, which takes about a second): the
            // watchdog fences the node if no renewal lands before its
            // deadline, so the sooner one lands the better.
            let mut last_renewal = Instant::now();
            let mut pause = self.timing.heartbeat();
            // Each heartbeat carries the host's usage since the previous one.
            let mut host = HostSampler::new();
            loop {
                tokio::select! {
                    () = wait(&mut shutdown, pause) => {}
                    done = finished(&mut smoke) => match done {
                        // Reported by registering again with it: the node
                        // becomes ready, or onboarding_failed with the reason.
                        Ok(done) => {
                            self.registration.onboarding = Some(done);
                            break;
                        }
                        // Only an abort ends the task otherwise (a panic
                        // in a check is that runtime's failure): run again.
                        Err(e) => {
                            tracing::warn!(node = %node, "smoke test cut short: {e}; again");
                            smoke = Some(self.start_smoke_test());
                        }
                    },
                }
                if *shutdown.borrow() {
                    break;
                }
                let reading = host
                    .read()
                    .map_err(|e| tracing::debug!(error = %e, "the host's usage was not read"))
                    .ok();
                let mut renewed = false;
                let mut lost = false;
                for _ in 0..self.servers.len() {
                    let Some(client) = &clients[server % self.servers.len()] else {
                        server += 1;
                        continue;
                    };
                    let sent = monotonic_ms();
                    let beat = tokio::time::timeout(
                        self.timing.heartbeat(),
                        client.heartbeat_with_host(
                            &node,
                            &self.session,
                            lease.id,
                            reading.as_ref(),
                        ),
                    )
                    .await;
                    match beat {
                        Ok(Ok(())) => {
                            self.renewed(sent);
                            renewed = true;
                            break;
                        }
                        Ok(Err(e)) if e.kind() == ErrorKind::NotFound => {
                            tracing::warn!(
                                node = %node,
                                "lost its lease; registering again"
                            );
                            lost = true;
                            break;
                        }
                        Ok(Err(e)) => {
                            tracing::warn!("heartbeat: {}", e.chain());
                            server += 1;
                        }
                        Err(_) => {
                            tracing::warn!("heartbeat timed out");
                            server += 1;
                        }
                    }
                }
                if renewed {
                    last_renewal = Instant::now();
                    pause = self.timing.heartbeat();
                } else if lost || last_renewal.elapsed() >= self.timing.lease_ttl() {
                    // Re-registering both retries other servers and takes
                    // the lease back if it still lives.
                    break;
                } else {
                    pause = HEARTBEAT_RETRY;
                }
            }
            if let Some(cleanup) = cleanup {
                cleanup.abort();
            }
        }
    }
}

/// Where the cluster places instances, asked of the servers in turn.
#[derive(Debug)]
struct ClusterPlacement {
    node: String,
    servers: Vec<String>,
    tls: Option<Arc<NodeCert>>,
    /// The clients, and the certificate generation they were built with.
    clients: std::sync::Mutex<(u64, Vec<Client>)>,
}

impl ClusterPlacement {
    fn new(node: &str, servers: &[String], tls: Option<Arc<NodeCert>>) -> Self {
        let placement = ClusterPlacement {
            node: node.to_owned(),
            servers: servers.to_vec(),
            tls,
            clients: std::sync::Mutex::new((0, Vec::new())),
        };
        let built = placement.build();
        *placement.lock() = built;
        placement
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, Vec<Client>)> {
        self.clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Clients of every server: with the node's current certificate (a
    /// node reads only the instances placed on it, zixiao-auth's
    /// Authorized), or plain.
    fn build(&self) -> (u64, Vec<Client>) {
        let tls = self
            .tls
            .as_ref()
            .map(|cert| (cert.generation(), cert.current()));
        let clients = self
            .servers
            .iter()
            .filter_map(|server| match &tls {
                Some((_, tls)) => tls.client_of(server).ok(),
                None => zixiao_api::connect(server).ok(),
            })
            .collect();
        (tls.map_or(0, |(generation, _)| generation), clients)
    }

    /// The clients, built again once the certificate was renewed.
    fn clients(&self) -> Vec<Client> {
        let generation = self.tls.as_ref().map_or(0, |cert| cert.generation());
        let mut clients = self.lock();
        if clients.0 != generation {
            *clients = self.build();
        }
        clients.1.clone()
    }

    /// Instance `id` as the cluster stores it (`None` inside: deleted);
    /// `Err` when no server could say.
    async fn lookup(&self, id: &str) -> std::result::Result<Option<Instance>, Error> {
        self.ask(|client| async move { client.get_instance(id).await })
            .await
    }

    /// What the first server that answers says to `read` (`None` inside:
    /// `NotFound`); `Err` when no server could say.
    async fn ask<T, F, Fut>(&self, read: F) -> std::result::Result<Option<T>, Error>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut last = None;
        for client in self.clients() {
            // A server that hangs (on its store, say) is passed over.
            let asked = tokio::time::timeout(PLACEMENT_TIMEOUT, read(client)).await;
            match asked {
                Ok(Ok(current)) => return Ok(Some(current)),
                Ok(Err(e)) if e.kind() == ErrorKind::NotFound => return Ok(None),
                Ok(Err(e)) => last = Some(e),
                Err(_) => {
                    last = Some(Error::Unavailable {
                        what: "a zixiao server".to_owned(),
                        source: Some(format!("no answer within {PLACEMENT_TIMEOUT:?}").into()),
                    })
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::invalid("servers", "no server is configured")))
    }
}

/// The servers' copy of a network: what EnsureNetwork and RemoveNetwork
/// set up or remove, so a caller can neither make a network the cluster
/// does not hold nor name another installation's objects on this host.
#[async_trait::async_trait]
impl StoredNetworks for ClusterPlacement {
    async fn stored_network(&self, name: &NetworkName) -> Result<Network> {
        let name = name.as_str();
        self.ask(|client| async move { client.get_network(name).await })
            .await?
            .ok_or_else(|| Error::not_found(format!("network `{name}` in the cluster")))
    }
}

/// The servers' copy of an instance placed on this node: what every
/// AgentService call runs on. A call made on a stale view (by a server
/// that has since lost the lead, or before the node was failed over and
/// the instance moved) must never start a second copy, and one carrying a
/// spec the cluster never accepted (forged or corrupted) must never reach
/// the runtime. The caller's revision is not compared: the spec run is the
/// stored one whatever the caller sent, and a legitimate caller's copy is
/// often a revision behind (a status or label written meanwhile).
#[async_trait::async_trait]
impl StoredInstances for ClusterPlacement {
    async fn placed_here(&self, id: &InstanceUuid) -> std::result::Result<Instance, DriverError> {
        match self.lookup(id.as_str()).await {
            // A lookup also finds instances by name: only the id counts.
            Ok(Some(stored)) if stored.id != id.as_str() => Err(not_in_cluster(id)),
            Ok(Some(stored)) if stored.node.as_deref() == Some(self.node.as_str()) => Ok(stored),
            Ok(Some(stored)) => Err(DriverError::FailedPrecondition(format!(
                "instance `{}` is {} now, not on node `{}`: not starting a second copy, \
                 nor acting on another node's",
                stored.name,
                stored
                    .node
                    .map_or("unplaced".to_owned(), |n| format!("placed on node `{n}`")),
                self.node
            ))),
            Ok(None) => Err(not_in_cluster(id)),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn incoming_here(&self, id: &InstanceUuid) -> std::result::Result<Instance, DriverError> {
        match self.lookup(id.as_str()).await {
            Ok(Some(stored)) if stored.id != id.as_str() => Err(not_in_cluster(id)),
            Ok(Some(stored)) if stored.live_migration_target() == Some(self.node.as_str()) => {
                Ok(stored)
            }
            Ok(Some(stored)) => Err(DriverError::FailedPrecondition(format!(
                "the cluster records no migration of instance `{}` to node `{}`",
                stored.name, self.node
            ))),
            Ok(None) => Err(not_in_cluster(id)),
            Err(e) => Err(unavailable(e)),
        }
    }
}

/// Whether `instance`, as the cluster stores it, belongs on node `node`:
/// placed there, or migrating there live or cold (then neither node's
/// clean-up may remove it).
fn belongs_on(instance: &Instance, node: &str) -> bool {
    instance.node.as_deref() == Some(node) || instance.live_migration_target() == Some(node)
}

/// No server could say.
fn unavailable(error: Error) -> DriverError {
    DriverError::Unavailable {
        runtime: "the cluster's servers".to_owned(),
        source: Box::new(error),
    }
}

/// Instance `id` is not in the cluster, or (to a node of a TLS cluster,
/// which sees only its own instances) not on this node.
fn not_in_cluster(id: &InstanceUuid) -> DriverError {
    DriverError::NotFound(format!("instance `{id}` on this node"))
}

/// Where an agent reports its orphan sweeps.
struct SweepReport {
    session: String,
    clients: Vec<MembershipClient>,
}

impl SweepReport {
    /// Sends `sweep` to the first server that takes it.
    async fn send(&self, node: &str, sweep: &OrphanSweep) {
        for client in &self.clients {
            match client.report_orphan_sweep(node, &self.session, sweep).await {
                Ok(()) => return,
                Err(e) => tracing::warn!("reporting the orphan sweep: {}", e.chain()),
            }
        }
    }
}

/// Removes the local copies of recorded instances that the cluster placed
/// elsewhere (or deleted) while this node was away; keeps (re-adopts) the
/// ones still placed here. Every [`SWEEP_EVERY`] rounds, starting at once,
/// it also sweeps the runtimes for orphans ([`sweep_orphans`]); the first
/// sweep and every one that found something are reported to the cluster.
async fn clean_up(
    placement: ClusterPlacement,
    agent: Arc<RecordingAgent>,
    records: Records,
    report: SweepReport,
) {
    let mut round = 0u64;
    loop {
        if round % SWEEP_EVERY == 0 {
            let sweep = sweep_orphans(&placement, &agent, &records).await;
            if round == 0 || !sweep.is_empty() {
                if !sweep.is_empty() {
                    tracing::info!(
                        "orphan sweep: adopted {:?}, removed {:?}, errors {:?}",
                        sweep.adopted,
                        sweep.removed,
                        sweep.errors
                    );
                }
                report.send(&placement.node, &sweep).await;
            }
        }
        clean_up_once(&placement, &agent, &records).await;
        round += 1;
        tokio::time::sleep(CLEAN_UP_PERIOD).await;
    }
}

/// Compares what the node's runtimes hold (each driver's [`Inventory`])
/// with the node's records. An object no record explains is an orphan: a
/// create cut off by `kill -9`, or a record lost with its state directory.
/// It is adopted (recorded again) when the cluster places that instance on
/// this node, and stopped and removed when the cluster placed it elsewhere
/// or deleted it; when no server can say, it is left for the next sweep.
///
/// The runtimes are listed before the records are read, so an instance
/// being created meanwhile (recorded before its runtime object exists) is
/// never taken for an orphan.
///
/// [`Inventory`]: zixiao_core::driver::Inventory
async fn sweep_orphans(
    placement: &ClusterPlacement,
    agent: &RecordingAgent,
    records: &Records,
) -> OrphanSweep {
    let mut sweep = OrphanSweep {
        at: Some(chrono::Utc::now()),
        ..OrphanSweep::default()
    };
    let mut held = Vec::new();
    for instance_type in InstanceType::ALL {
        let Ok(driver) = agent.driver(instance_type) else {
            continue;
        };
        let listed = match driver.inventory() {
            Some(inventory) => inventory.instance_ids().await,
            None => continue,
        };
        match listed {
            Ok(ids) => held.push((instance_type, driver, ids)),
            Err(e) => sweep
                .errors
                .push(format!("listing the {instance_type} runtime: {e}")),
        }
    }
    let recorded: BTreeSet<String> = records.list().into_iter().map(|i| i.id).collect();
    for (instance_type, driver, ids) in held {
        let Some(inventory) = driver.inventory() else {
            continue;
        };
        for id in ids.difference(&recorded) {
            match placement.lookup(id).await {
                Ok(Some(instance))
                    if belongs_on(&instance, &placement.node)
                        && instance.spec.instance_type == instance_type =>
                {
                    match records.put(&instance) {
                        Ok(()) => sweep.adopted.push(id.clone()),
                        Err(e) => sweep.errors.push(format!("adopting `{id}`: {e}")),
                    }
                }
                Ok(_) => match inventory.remove_orphan(id).await {
                    Ok(()) => sweep.removed.push(id.clone()),
                    Err(e) => sweep.errors.push(format!("removing `{id}`: {e}")),
                },
                Err(e) => sweep.errors.push(format!(
                    "`{id}`: no server could say where it is placed: {}",
                    e.chain()
                )),
            }
        }
    }
    sweep
}

/// How long one server may take to say where an instance is placed.
const PLACEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the agent looks for local copies that moved away.
const CLEAN_UP_PERIOD: Duration = Duration::from_secs(5);

/// Every how many clean-up rounds the runtimes are swept for orphans (a
/// minute): listing every runtime costs more than reading the records.
const SWEEP_EVERY: u64 = 12;

/// The pause before a heartbeat round that follows one no server answered.
const HEARTBEAT_RETRY: Duration = Duration::from_millis(100);

async fn clean_up_once(placement: &ClusterPlacement, agent: &RecordingAgent, records: &Records) {
    for instance in records.list() {
        let Ok(stored) = placement.lookup(&instance.id).await else {
            continue;
        };
        // Still this node's, or arriving here live.
        if stored.is_some_and(|stored| belongs_on(&stored, &placement.node)) {
            continue;
        }
        let driver = match agent.driver(instance.spec.instance_type) {
            Ok(driver) => driver,
            Err(e) => {
                tracing::warn!(instance = %instance.name, "cleaning up: {e}");
                continue;
            }
        };
        let removed = async {
            driver.stop(&instance, Duration::ZERO).await?;
            driver.delete(&instance).await
        };
        match removed.await {
            Ok(()) => {
                tracing::info!(
                    instance = %instance.name,
                    "removed: it now lives elsewhere or was deleted"
                )
            }
            Err(e) => {
                tracing::warn!(instance = %instance.name, "cleaning up: {e}")
            }
        }
    }
}
