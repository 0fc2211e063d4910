//! Live migration of a running microVM to another node's microvm driver:
//! the [`LiveMigrate`] capability, for microVMs on the `vmm` backend.
//!
//! zixiao-vmm copies a running guest itself (pre-copy: memory while the
//! guest runs, then a short stop-and-copy, then a commit; see
//! `zixiao_vmm::migration`) over any connected stream socket. This module
//! carries that stream between two nodes:
//!
//! - **target** ([`LiveMigrate::prepare_incoming`]): makes the instance's
//!   directory and record as a create would (its TAPs plugged, so the
//!   guest keeps its MACs and addresses; the images it names checked in
//!   this node's store), launches a VMM with `Boot::Incoming` of the same
//!   config, listening on its run directory's `migrate.sock`, and opens a
//!   TCP listener on the node's migration address (the one it gives
//!   libvirt migrations: `DriverConfig::libvirt_migration`, else none and
//!   `Unsupported`) on an ephemeral port. The listener bridges **one**
//!   connection to `migrate.sock`: the first that sends this migration's
//!   one-time token (256 random bits, hex) within [`TOKEN_TIMEOUT`];
//!   others are closed unread. It gives up after [`INCOMING_WINDOW`]. The
//!   answer's URI is `zxvmm://ADDRESS:PORT/TOKEN`: the token travels only
//!   in the `MigrationTarget` (server to source agent) and is never logged.
//! - **source** ([`LiveMigrate::migrate_live`]): connects over TCP, sends
//!   the token, and hands the socket to its VMM (`migrate_over`). Once the
//!   target acknowledged and the source VMM committed and exited, the
//!   source removes everything it held of the instance (ports, TAPs,
//!   directory). Any failure before the commit leaves the source VMM
//!   running as it was (the VMM's own rule); a refused token or a target
//!   that died ends the stream and so the migration.
//! - **abort** ([`LiveMigrate::abort_incoming`]): closes the listener,
//!   kills the incoming VMM and removes what was prepared, unless the
//!   instance runs here (the migration went through).
//!
//! The record the target writes names the `vmm` backend, so after the
//! switch the target's driver finds the instance's VMM in its own run
//! directory (`<state_dir>/microvm/<id>/vmm/`), as after a create. The
//! incoming VMM binds its API only once it runs (after the source's
//! commit, so just after the source's call returned): until then the run
//! directory carries a marker, and asking about the instance waits a
//! moment for it to answer ([`settle_arrival`]) instead of finding a VMM
//! that does not.
//!
//! Refused with `Unsupported`, before anything is made:
//! - a microVM on the `qemu` backend (QEMU's migration is not driven by
//!   Zixiao): it migrates cold (`--cold`);
//! - a microVM with **writable disks**: the guest writes them while its
//!   memory is copied, and the VMM's stream carries memory and device
//!   state, not disk blocks; copying the disk first (as a cold migration
//!   does) would hand the target a disk older than the memory it resumes
//!   with. Until the VMM tracks dirty disk blocks, such a microVM migrates
//!   cold. Read-only disks are images every node has: they are fine;
//! - a clone or a microVM restored from a snapshot (its memory maps a
//!   snapshot only its node holds, and its config is not its spec's).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use zixiao_core::driver::{microvm_live_refusal, LiveMigrate, MigrationReport, MigrationTarget};
use zixiao_core::{Driver as _, DriverError, Instance, RuntimeState};
use zixiao_vmm::{MigrationParams, VmmClient};

use super::layout::{Backend, InstanceDir, Record, Stage};
use super::vmm::{vmm_failed, VmmBoot};
use super::MicrovmDriver;

/// The URI scheme of a microVM's migration target.
const SCHEME: &str = "zxvmm://";
/// Hex digits of a one-time token (256 bits).
const TOKEN_LEN: usize = 64;
/// How long a prepared target waits for its source to connect.
pub(crate) const INCOMING_WINDOW: Duration = Duration::from_secs(120);
/// How long a connection to the listener may take to send its token.
pub(crate) const TOKEN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the source may take to reach the target's listener.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an incoming VMM that took its stream may take to run (and
/// answer) once asked about: the source has committed when its call
/// returns, and the target binds its API only after it resumed.
const ARRIVAL_WINDOW: Duration = Duration::from_secs(5);
/// Marks a run directory whose VMM was launched for a live migration and
/// has not answered yet (see [`settle_arrival`]).
const INCOMING: &str = "zixiao-incoming";
/// Copy rounds while the guest runs, at most.
const MAX_ROUNDS: u32 = 30;
/// The downtime the final stop-and-copy aims under (libvirt's default is
/// 300 ms; a VMM guest's state is small, its memory what it dirtied).
const DOWNTIME_MS: u32 = 300;

/// The listeners of the migrations this node is prepared to receive, by
/// instance id: an abort (or a new preparation) closes the one it replaces.
#[derive(Debug, Clone, Default)]
pub(crate) struct IncomingListeners {
    by_instance: Arc<Mutex<HashMap<String, tokio::task::AbortHandle>>>,
}

impl IncomingListeners {
    fn insert(&self, id: &str, listener: tokio::task::AbortHandle) {
        let old = self
            .by_instance
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), listener);
        if let Some(old) = old {
            old.abort();
        }
    }

    /// Forgets instance `id`'s listener when it is the task `task` (which
    /// has ended), not one a later preparation put in its place.
    fn forget(&self, id: &str, task: tokio::task::Id) {
        let mut listeners = self.by_instance.lock().unwrap_or_else(|p| p.into_inner());
        if listeners.get(id).is_some_and(|l| l.id() == task) {
            listeners.remove(id);
        }
    }

    fn close(&self, id: &str) {
        let old = self
            .by_instance
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if let Some(old) = old {
            old.abort();
        }
    }
}

/// A fresh one-time token: two v4 UUIDs' random bits, as hex.
fn new_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The port and token of a target's URI (`zxvmm://ADDRESS:PORT/TOKEN`).
/// Errors: `InvalidArgument` on `target.uri`, without repeating the URI
/// (it holds the token).
fn parse_uri(uri: &str) -> Result<(u16, String), DriverError> {
    let bad = |why: &str| crate::errors::invalid("target.uri", why);
    let rest = uri
        .strip_prefix(SCHEME)
        .ok_or_else(|| bad("not a microVM migration target (zxvmm://ADDRESS:PORT/TOKEN)"))?;
    let (host, token) = rest
        .split_once('/')
        .ok_or_else(|| bad("has no token after the address"))?;
    let port = host
        .parse::<SocketAddr>()
        .map_err(|_| bad("has no ADDRESS:PORT"))?
        .port();
    if token.len() != TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("its token is not 64 hex digits"));
    }
    Ok((port, token.to_owned()))
}

/// Whether `a` and `b` are equal, in a time that does not depend on where
/// they differ.
fn same_token(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Refuses what does not migrate live (see the module documentation), on
/// either node. Errors: `Unsupported`.
fn refuse(instance: &Instance, backend: Backend) -> Result<(), DriverError> {
    match microvm_live_refusal(instance, backend.as_str()) {
        Some(why) => Err(DriverError::Unsupported(why)),
        None => Ok(()),
    }
}

#[async_trait]
impl LiveMigrate for MicrovmDriver {
    async fn prepare_incoming(&self, instance: &Instance) -> Result<MigrationTarget, DriverError> {
        let backend = self.recorded_backend(instance)?;
        refuse(instance, backend)?;
        let address = self.options.migration_address.ok_or_else(|| {
            DriverError::Unsupported(
                "this node takes no live migrations of microVMs: it has no migration address \
                 (the agent's --libvirt-migration-address or --underlay)"
                    .to_owned(),
            )
        })?;
        let target = |port: u16, token: &str| {
            let at = SocketAddr::new(address, port);
            MigrationTarget::new(
                &format!("{SCHEME}{at}/{token}"),
                address,
                &self.options.state_dir,
            )
        };
        let dir = self.dir(instance)?;
        if dir.record()?.is_some() {
            if matches!(
                self.inspect(instance).await?,
                RuntimeState::Running | RuntimeState::Paused
            ) {
                return Err(DriverError::AlreadyExists(format!(
                    "this node's microvm driver runs instance `{}` already",
                    instance.name
                )));
            }
            // A preparation left by a call cut off: prepared afresh.
            self.abort_incoming(instance).await?;
        }
        // What a create checks, before anything is made: the images it
        // names are in this node's store (fetched as a create would), the
        // VMM can run here, the ports it publishes are free.
        self.images
            .pull_for(&instance.spec, &Default::default())
            .await?;
        self.vmm_backend()?;
        self.network_for(instance, Backend::Vmm)?;
        crate::net::check_ports(self.network.as_ref(), instance, super::DRIVER).await?;
        let plan = self.boot_plan(instance, Backend::Vmm)?;
        dir.check_socket_paths(instance.spec.vsock.is_some())?;
        // Bound first: a node whose migration address is not its own
        // fails here, before anything is made.
        let listener = TcpListener::bind(SocketAddr::new(address, 0))
            .await
            .map_err(|e| crate::errors::io(format!("listen for migrations on {address}"), e))?;
        let port = listener
            .local_addr()
            .map_err(|e| crate::errors::io("read the migration listener's port", e))?
            .port();
        let token = new_token();
        let answer = target(port, &token)?;
        std::fs::create_dir_all(&dir.path)
            .map_err(|e| crate::errors::io(format!("create {}", dir.path.display()), e))?;
        let record = Record {
            id: instance.id.clone(),
            name: instance.name.clone(),
            backend: Backend::Vmm,
            stage: Stage::Launching,
            attachments: instance.attachments.clone(),
        };
        let made = async {
            dir.write_record(&record)?;
            let network = self
                .plug(instance, Backend::Vmm, &record.attachments)
                .await?;
            let vmm = self.vmm_backend()?;
            vmm.launch(&dir, VmmBoot::Incoming(&plan), network).await?;
            std::fs::write(dir.vmm_run_dir().join(INCOMING), b"")
                .map_err(|e| crate::errors::io("mark the incoming VMM", e))?;
            // It counts as started once it runs: a guest paused at the
            // source arrives paused, and is reported so.
            vmm.mark_started(&dir)?;
            crate::net::publish_ports(self.network.as_ref(), instance, super::DRIVER).await?;
            dir.write_record(&Record {
                stage: Stage::Created,
                ..record.clone()
            })
        }
        .await;
        if let Err(e) = made {
            self.remove_everything(&instance.id, &dir, Some(Backend::Vmm), &record.attachments)
                .await;
            return Err(e);
        }
        let socket = dir.vmm_run_dir().join(zixiao_vmm::files::MIGRATE_SOCK);
        let (listeners, id) = (self.incoming.clone(), instance.id.clone());
        let bridge = tokio::spawn(async move {
            bridge_one(listener, token, socket, &id).await;
            listeners.forget(&id, tokio::task::id());
        });
        self.incoming.insert(&instance.id, bridge.abort_handle());
        tracing::info!(instance = %instance.id, %address, port, "prepared for a live migration");
        Ok(answer)
    }

    async fn migrate_live(
        &self,
        instance: &Instance,
        target: &MigrationTarget,
    ) -> Result<MigrationReport, DriverError> {
        let (dir, record) = self.existing_record(instance)?;
        refuse(instance, record.backend)?;
        let (port, token) = parse_uri(target.uri())?;
        if !matches!(
            self.inspect(instance).await?,
            RuntimeState::Running | RuntimeState::Paused
        ) {
            return Err(DriverError::FailedPrecondition(format!(
                "microVM `{}` is not running here: only a running microVM migrates live",
                instance.name
            )));
        }
        let client = VmmClient::connect(&dir.vmm_run_dir())
            .await
            .map_err(|e| vmm_failed("connect to zixiao-vmm", e))?;
        let started = Instant::now();
        let stream = connect_with_token(SocketAddr::new(target.address(), port), &token).await?;
        let params = MigrationParams::new(MAX_ROUNDS, DOWNTIME_MS)
            .map_err(|e| vmm_failed("set the migration's limits", e))?;
        tracing::info!(instance = %instance.id, address = %target.address(), port, "migrating live");
        let report = client
            .migrate_over(stream, params)
            .await
            .map_err(|e| vmm_failed("migrate the microVM live", e))?;
        let total = started.elapsed();
        // It runs on the target; its VMM here has ended. What this node
        // held of it goes: ports, TAPs, directory.
        self.leave(instance, &dir, &record).await;
        Ok(MigrationReport {
            total,
            downtime: Some(Duration::from_millis(report.downtime_ms)),
            memory_bytes: Some(report.memory_bytes_sent),
            disk_bytes: None,
            rounds: Some(report.rounds),
        })
    }

    async fn abort_incoming(&self, instance: &Instance) -> Result<(), DriverError> {
        self.incoming.close(&instance.id);
        let dir = self.dir(instance)?;
        let Some(record) = dir.record()? else {
            return Ok(());
        };
        if record.stage == Stage::Created
            && matches!(
                self.inspect(instance).await,
                Ok(RuntimeState::Running | RuntimeState::Paused)
            )
        {
            // The migration did finish: the instance is this node's now.
            return Ok(());
        }
        self.destroy(&dir, record.backend).await;
        super::process::kill_monitors(&dir.path, &[]).await;
        self.unplug(&instance.id, &record.attachments).await?;
        dir.remove().await
    }
}

impl MicrovmDriver {
    /// The backend `instance` runs on as its record says (`runtime`, as
    /// the source node recorded it), else the one a create here would
    /// choose. Errors: `Unsupported` (that backend cannot run here).
    fn recorded_backend(&self, instance: &Instance) -> Result<Backend, DriverError> {
        match instance.runtime.as_deref() {
            Some("vmm") => Ok(Backend::Vmm),
            Some("qemu") => Ok(Backend::Qemu),
            _ => self.backend_of(instance),
        }
    }

    /// After the instance left for another node: removes what this node
    /// held of it. Best effort: it runs on the target already, and an
    /// orphan sweep removes what is left.
    async fn leave(&self, instance: &Instance, dir: &InstanceDir, record: &Record) {
        super::process::kill_monitors(&dir.path, &[]).await;
        let removed = async {
            self.unplug(&instance.id, &record.attachments).await?;
            dir.remove().await
        }
        .await;
        if let Err(e) = removed {
            tracing::warn!(instance = %instance.id, error = %e, "cannot remove a migrated microVM's files");
        }
    }
}

/// Before `dir`'s VMM is asked about: an incoming VMM that took its
/// stream (no `migrate.sock` left) and has neither ended nor bound its API
/// yet is given up to [`ARRIVAL_WINDOW`] to do either, so that the target
/// reports a migration the source saw through as running rather than as a
/// VMM that does not answer. Costs one `stat` for any other VMM.
pub(super) async fn settle_arrival(dir: &InstanceDir) {
    use zixiao_vmm::files;
    let run_dir = dir.vmm_run_dir();
    let marker = run_dir.join(INCOMING);
    if !marker.exists() {
        return;
    }
    let deadline = Instant::now() + ARRIVAL_WINDOW;
    loop {
        if run_dir.join(files::API_SOCK).exists() {
            // It runs and answers: an ordinary VMM from now on.
            let _ = std::fs::remove_file(&marker);
            return;
        }
        let waiting_or_ended =
            run_dir.join(files::MIGRATE_SOCK).exists() || run_dir.join(files::EXIT).exists();
        if waiting_or_ended || Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The source's side of the stream: a TCP connection to the target's
/// listener that has sent the token, as a blocking socket for the VMM.
/// Errors: `Unavailable` (the target cannot be reached).
async fn connect_with_token(at: SocketAddr, token: &str) -> Result<OwnedFd, DriverError> {
    let unreachable = |e: std::io::Error| DriverError::Unavailable {
        runtime: format!("the target's migration listener at {at}"),
        source: Box::new(e),
    };
    let mut tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(at))
        .await
        .map_err(|_| {
            unreachable(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no connection",
            ))
        })?
        .map_err(unreachable)?;
    tcp.write_all(token.as_bytes()).await.map_err(unreachable)?;
    let _ = tcp.set_nodelay(true);
    let tcp = tcp.into_std().map_err(unreachable)?;
    // The VMM reads and writes it as a blocking socket (with its own
    // timeouts); tokio left it non-blocking.
    tcp.set_nonblocking(false).map_err(unreachable)?;
    Ok(OwnedFd::from(tcp))
}

/// The target's side: accepts connections on `listener` until one sends
/// `token` (others are closed) or [`INCOMING_WINDOW`] passes, then bridges
/// that one to the incoming VMM's `socket` until either side closes.
async fn bridge_one(listener: TcpListener, token: String, socket: PathBuf, instance: &str) {
    let deadline = tokio::time::Instant::now() + INCOMING_WINDOW;
    let mut tcp = loop {
        let (mut tcp, peer) = match tokio::time::timeout_at(deadline, listener.accept()).await {
            Ok(Ok(accepted)) => accepted,
            Ok(Err(e)) => {
                tracing::warn!(%instance, error = %e, "the migration listener failed");
                return;
            }
            Err(_) => {
                tracing::warn!(%instance, "no source connected to the migration listener in time");
                return;
            }
        };
        let mut sent = [0u8; TOKEN_LEN];
        match tokio::time::timeout(TOKEN_TIMEOUT, tcp.read_exact(&mut sent)).await {
            Ok(Ok(_)) if same_token(&sent, token.as_bytes()) => break tcp,
            _ => {
                tracing::warn!(%instance, %peer, "refused a migration connection without its token")
            }
        }
    };
    drop(listener);
    let _ = tcp.set_nodelay(true);
    let mut unix = match UnixStream::connect(&socket).await {
        Ok(unix) => unix,
        Err(e) => {
            tracing::warn!(%instance, error = %e, "the incoming VMM does not listen");
            return;
        }
    };
    if let Err(e) = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await {
        tracing::debug!(%instance, error = %e, "the migration stream ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_uri_gives_its_port_and_token_and_nothing_else_passes() {
        let token = new_token();
        assert_eq!(token.len(), TOKEN_LEN);
        assert_ne!(token, new_token());
        let (port, parsed) = parse_uri(&format!("zxvmm://127.0.0.1:4100/{token}")).unwrap();
        assert_eq!((port, parsed.as_str()), (4100, token.as_str()));
        let (port, _) = parse_uri(&format!("zxvmm://[::1]:9/{token}")).unwrap();
        assert_eq!(port, 9);
        for bad in [
            format!("qemu+tls://127.0.0.1/{token}"),
            format!("zxvmm://127.0.0.1/{token}"),
            "zxvmm://127.0.0.1:4100/short".to_owned(),
            format!("zxvmm://127.0.0.1:4100/{}", "g".repeat(TOKEN_LEN)),
            "zxvmm://127.0.0.1:4100".to_owned(),
        ] {
            let err = parse_uri(&bad).unwrap_err();
            assert_eq!(err.kind(), zixiao_core::ErrorKind::InvalidArgument, "{bad}");
            assert!(
                !err.to_string().contains(&token),
                "the token is not repeated"
            );
        }
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token(b"abcd", b"abcd"));
        assert!(!same_token(b"abcd", b"abce"));
        assert!(!same_token(b"abc", b"abcd"));
    }
}
