//! `zixiao server`: one replica of the control plane. Every replica serves
//! the user-facing services over the controller's `Api` (wrapped in
//! [`WithLeader`]), the agents' MembershipService, reflection and health,
//! over the same store; the one that wins the election also runs the
//! failure detector and the reconcile loop. Replicas keep no state of their
//! own, so any of them can be killed at any time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::Routes;
use zixiao_api::secure::ServerTls;
use zixiao_auth::{AuditLog, AuthStore, Authenticator, Pki, Retention};
use zixiao_core::api::StatsHistory;
use zixiao_core::controller::Convergence;
use zixiao_core::{Controller, Error, Result};

use crate::membership::Membership;
use crate::membership_service::{MembershipServer, NodeGuard};
use crate::nodes::NodeSync;
use crate::timing::Timing;
use crate::with_leader::WithLeader;

/// How a server runs.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// This replica's id (unique among replicas; shown as the leader).
    pub id: String,
    /// Where the gRPC API listens (port 0: any free port).
    pub listen: SocketAddr,
    /// Liveness settings.
    pub timing: Timing,
    /// Where every API call is counted and timed (zixiao-metrics'
    /// `Metered` around the controller, inside authorization: the calls
    /// that were let through; refusals are in the audit log); `None`: not
    /// measured.
    pub metrics: Option<Arc<zixiao_metrics::Metrics>>,
    /// What the listener grants its peers (connections, calls, time).
    pub limits: zixiao_api::Limits,
}

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    controller: Controller,
    user_scope: Arc<dyn zixiao_api::server::CallScope>,
    stats_history: StatsHistory<Arc<dyn zixiao_core::api::Api>>,
    leading: watch::Receiver<bool>,
    shutdown: watch::Sender<bool>,
    timing: Timing,
    tasks: Vec<JoinHandle<()>>,
}

impl ServerHandle {
    /// Where the API listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The stats history this server samples, to answer from in front of
    /// another API of the same deployment
    /// ([`StatsHistory::share_with`]).
    pub fn stats_history(&self) -> &StatsHistory<Arc<dyn zixiao_core::api::Api>> {
        &self.stats_history
    }

    /// The controller it serves.
    pub fn controller(&self) -> &Controller {
        &self.controller
    }

    /// Who its user calls are served as: authenticated, authorized and
    /// audited exactly as over gRPC, for another transport of this
    /// replica (the web dashboard).
    pub fn user_scope(&self) -> Arc<dyn zixiao_api::server::CallScope> {
        self.user_scope.clone()
    }

    /// Whether it leads now.
    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// Follows a carbon source file (see [`crate::carbon`]; open it with
    /// [`CarbonSource::open`](crate::carbon::CarbonSource::open) before the
    /// server starts, so a bad file stops the start-up): checked on the
    /// failure detector's tick until the server stops, its values given to
    /// the nodes it names.
    pub fn follow_carbon_file(&mut self, mut source: crate::carbon::CarbonSource) {
        let controller = self.controller.clone();
        let mut stop = self.shutdown.subscribe();
        let every = self.timing.sweep();
        let task = tokio::spawn(async move {
            while !*stop.borrow() {
                if let Err(e) = source.tick(&controller).await {
                    tracing::warn!(
                        file = %source.path().display(),
                        "applying the carbon source file: {}",
                        e.chain()
                    );
                }
                crate::election::wait(&mut stop, every).await;
            }
        });
        // Before the listener's task, which `wait` waits for.
        self.tasks.insert(0, task);
    }

    /// Stops serving and gives up the lead.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for mut task in self.tasks.drain(..) {
            if tokio::time::timeout(Duration::from_secs(2), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }

    /// Waits until the server stops (it stops only on [`ServerHandle::shutdown`]
    /// or when its listener fails).
    pub async fn wait(mut self) {
        if let Some(serve) = self.tasks.pop() {
            let _ = serve.await;
        }
    }
}

/// Starts a server over `controller` (and its store). The controller must
/// converge in the background ([`Convergence::Background`], as
/// [`controller`] builds it): only the leader's loop converges, and a call
/// that waits watches the instance, so two replicas never drive one
/// instance at once. Errors: `InvalidArgument` (timing, a controller that
/// converges in its callers), `Unavailable` (the address cannot be bound).
pub async fn start(controller: Controller, options: ServerOptions) -> Result<ServerHandle> {
    start_with(controller, options, None).await
}

/// [`start`], serving TLS with `tls`: every user call is authenticated (a
/// bearer token or a client certificate of the cluster CA), authorized
/// and audited (`zixiao_api::secure::api_server`). Without TLS ([`start`])
/// every caller is the implicit admin, so a plain server belongs on
/// loopback.
///
/// Agents join with a join token (`JoinCluster`: `pki` signs their node
/// certificate), then call with that certificate, each only for its own
/// node; the server calls them with its own certificate.
pub async fn start_secure(
    controller: Controller,
    options: ServerOptions,
    tls: ServerTls,
    pki: Arc<Pki>,
) -> Result<ServerHandle> {
    start_with(controller, options, Some((tls, pki))).await
}

async fn start_with(
    controller: Controller,
    options: ServerOptions,
    secure: Option<(ServerTls, Arc<Pki>)>,
) -> Result<ServerHandle> {
    let (tls, pki) = match secure {
        Some((tls, pki)) => (Some(tls), Some(pki)),
        None => (None, None),
    };
    options.timing.validate()?;
    if controller.convergence() != Convergence::Background {
        return Err(Error::invalid(
            "controller",
            "a server's controller must converge in the background \
             (ControllerBuilder::convergence(Convergence::Background)): the leader's loop \
             converges, requests only wait",
        ));
    }
    let listener = TcpListener::bind(options.listen).await.map_err(|e| {
        Error::invalid(
            "listen",
            format!("cannot listen on {}: {e}", options.listen),
        )
    })?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Internal(format!("listener address: {e}")))?;
    let store = controller.store().clone();
    let membership = Membership::new(store.clone(), options.id.clone(), options.timing)
        .watching(controller.clone());
    let sync = NodeSync::new(controller.clone()).with_tls(tls.clone());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (leading_tx, leading_rx) = watch::channel(false);
    // Every known node is reachable before the first request is served.
    sync.sync_once().await?;
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(
        sync.clone()
            .run(Duration::from_millis(250), shutdown_rx.clone()),
    ));
    tasks.push(tokio::spawn(membership.clone().run(shutdown_rx.clone())));
    // Agents are taken once the server holds a lease to put them on; one
    // that registers earlier is told to try again.
    membership.ready(options.timing.lease_ttl()).await;
    tasks.push(tokio::spawn(crate::election::run(
        store.clone(),
        options.id.clone(),
        options.timing.leader_ttl(),
        leading_tx,
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(crate::leader::run(
        controller.clone(),
        options.timing,
        leading_rx.clone(),
        shutdown_rx.clone(),
    )));
    let guard = match (&tls, pki) {
        (Some(tls), Some(pki)) => {
            let clock: Arc<dyn zixiao_core::Clock> = Arc::new(zixiao_core::SystemClock);
            let accounts = AuthStore::new(store.clone(), clock.clone());
            Some(Arc::new(NodeGuard {
                authenticator: Authenticator::new(accounts.clone(), Some(tls.trust().clone())),
                accounts,
                log: Arc::new(AuditLog::new(
                    store.clone(),
                    clock,
                    options.id.clone(),
                    Retention::default(),
                )),
                pki,
            }))
        }
        _ => None,
    };
    let mut routes = Routes::builder();
    let api = zixiao_core::api::Traced::new(WithLeader::new(controller.clone(), store.clone()));
    // Sampled below the metering and the access layer: the samples are
    // the server's own calls, neither counted nor audited.
    let api: Arc<dyn zixiao_core::api::Api> = Arc::new(api);
    let history = StatsHistory::new(api);
    let membership = MembershipServer {
        controller: controller.clone(),
        membership,
        sync,
        guard,
        hosts: history.host_reports(),
    };
    let mut stop = shutdown_rx.clone();
    let sampling = history.clone().sample(
        Duration::from_millis(options.timing.stats_sample_ms),
        async move {
            let _ = stop.wait_for(|stop| *stop).await;
        },
    );
    tasks.push(tokio::spawn(sampling));
    let api: Arc<dyn zixiao_core::api::Api> = match &options.metrics {
        Some(metrics) => Arc::new(zixiao_metrics::Metered::new(
            history.clone(),
            metrics.clone(),
        )),
        None => Arc::new(history.clone()),
    };
    let user_scope = zixiao_api::secure::user_scope(api, store.clone(), &options.id, tls.as_ref());
    zixiao_api::server::ApiServer::scoped(user_scope.clone()).add_to(&mut routes);
    routes.add_service(membership.into_service());
    let mut served = zixiao_api::server::SERVICES.to_vec();
    served.push(crate::membership_service::SERVICE);
    zixiao_api::add_standard_services(&mut routes, &served).await?;
    let routes = routes.routes();
    let mut stop = shutdown_rx.clone();
    let limits = options.limits;
    tasks.push(tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|stop| *stop).await;
        };
        let served =
            zixiao_api::secure::serve_routes(routes, listener, tls.as_ref(), &limits, stopped);
        if let Err(e) = served.await {
            tracing::warn!("serving: {}", e.chain());
        }
    }));
    Ok(ServerHandle {
        addr,
        controller,
        user_scope,
        stats_history: history,
        leading: leading_rx,
        shutdown: shutdown_tx,
        timing: options.timing,
        tasks,
    })
}

/// A controller over `store` with the default scheduler, addresses
/// allocated in the store (zixiao-net's StoreIpam) and every create
/// charged to its project's quota in its own transaction (zixiao-auth's
/// `ProjectQuota`, so replicas on one etcd never exceed a quota together),
/// converging in the background, for a server. Nodes' agents (and their
/// network hosts) are attached as they register.
pub fn controller(store: Arc<dyn zixiao_core::Store>) -> Controller {
    builder(store).build()
}

/// The builder of [`controller`], to add to it (admissions, options). Its
/// cache keeps the nodes' liveness keys, for the failure detector.
pub fn builder(store: Arc<dyn zixiao_core::Store>) -> zixiao_core::ControllerBuilder {
    Controller::builder(
        store.clone(),
        Arc::new(zixiao_sched::PluginScheduler::default()),
    )
    .address_allocator(Arc::new(zixiao_net::StoreIpam::new(store.clone())))
    .admission(Arc::new(zixiao_auth::ProjectQuota::new(store)))
    .convergence(Convergence::Background)
    .cache_prefix(crate::membership::NODE_LEASES_PREFIX)
}
