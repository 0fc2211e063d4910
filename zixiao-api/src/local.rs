//! The embedded deployment's Unix socket (`<state-dir>/zixiao.sock`): the
//! user-facing services plus [`LocalService`](crate::pb::local_service_server),
//! whose requests carry paths on the server's own machine (image archives,
//! snapshot directories, backups). A caller that can open the socket (mode
//! 0600) runs on that machine as the socket's owner and could read and
//! write those paths itself, so only this listener serves them; a TCP
//! listener never does.
//!
//! [`serve_unix`] is what `zixiao server --embedded` (and `zixiao daemon`)
//! runs; [`connect_unix`] is how the CLI and the bindings on the same
//! state directory reach it.

use std::ops::ControlFlow;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use zixiao_core::api::{
    Api, Client, Handling, ImportAs, Progress, Request as ApiRequest, Response as ApiResponse,
};
use zixiao_core::driver::ImportProgress;
use zixiao_core::model::{ImageKind, ImageName, NodeImageName};
use zixiao_core::store::StoreSummary;
use zixiao_core::{Error, Result, Wait};

use crate::convert::{decode_image_kind, decode_instance_type};
use crate::pb;
use crate::pb::local_service_server::{LocalService, LocalServiceServer};
use crate::status::from_error;

/// The name of the socket in a state directory.
pub const SOCKET_NAME: &str = "zixiao.sock";

/// The socket of the daemon serving `state_dir`.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_NAME)
}

/// A bound daemon socket, not yet served: binding first lets a caller
/// report a state directory another daemon serves before it starts anything.
#[derive(Debug)]
pub struct UnixSocket {
    listener: tokio::net::UnixListener,
    path: PathBuf,
}

impl UnixSocket {
    /// Binds the socket at `path` (mode 0600). A socket file left by a
    /// server that died is replaced; one a live server answers on is
    /// `Unavailable` (another daemon holds this state directory).
    ///
    /// Errors: `Unavailable` (in use, or the socket cannot be made).
    pub async fn bind(path: &Path) -> Result<Self> {
        Ok(UnixSocket {
            listener: bind(path).await?,
            path: path.to_owned(),
        })
    }

    /// Serves `api`: the user-facing services, the local-files service,
    /// reflection and health, until `shutdown` completes; the socket is
    /// removed then. Errors: `Unavailable` (the listener failed), `Internal`.
    pub async fn serve(
        self,
        api: Arc<dyn Api>,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<()> {
        let mut routes = tonic::service::Routes::builder();
        crate::server::ApiServer::new(api.clone())
            .with_host_paths()
            .add_to(&mut routes);
        routes.add_service(
            LocalServiceServer::new(LocalServer {
                client: Client::new(api),
            })
            .max_decoding_message_size(crate::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::MAX_MESSAGE_BYTES),
        );
        let mut services = crate::server::SERVICES.to_vec();
        services.push("zixiao.v1.LocalService");
        crate::add_standard_services(&mut routes, &services).await?;
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(self.listener);
        let served = tonic::transport::Server::builder()
            .trace_fn(crate::limits::grpc_span)
            .add_routes(routes.routes())
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await;
        let _ = std::fs::remove_file(&self.path);
        served.map_err(|e| Error::Unavailable {
            what: format!("the socket `{}`", self.path.display()),
            source: Some(Box::new(e)),
        })
    }
}

/// Binds a Unix socket at `path` and serves `api` on it until `shutdown`
/// completes ([`UnixSocket::bind`], then [`UnixSocket::serve`]).
pub async fn serve_unix(
    api: Arc<dyn Api>,
    path: &Path,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<()> {
    UnixSocket::bind(path).await?.serve(api, shutdown).await
}

/// Binds `path`, replacing a socket nobody answers on, and makes it 0600.
async fn bind(path: &Path) -> Result<tokio::net::UnixListener> {
    let unavailable = |what: String, e: std::io::Error| Error::Unavailable {
        what,
        source: Some(Box::new(e)),
    };
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(Error::Unavailable {
                what: format!(
                    "the state directory's socket `{}`: another zixiao daemon serves it",
                    path.display()
                ),
                source: None,
            });
        }
        std::fs::remove_file(path)
            .map_err(|e| unavailable(format!("a stale socket `{}`", path.display()), e))?;
    }
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|e| unavailable(format!("the socket `{}`", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| unavailable(format!("the socket `{}`", path.display()), e))?;
    Ok(listener)
}

/// Whether a daemon answers on `path` now.
pub async fn answers(path: &Path) -> bool {
    tokio::net::UnixStream::connect(path).await.is_ok()
}

/// A client of the daemon listening on the Unix socket at `path`: the same
/// [`Client`] as [`crate::connect`], which may also send the requests that
/// carry paths of this machine. Connects on first use. Errors: `Unavailable`
/// (nothing answers there, on the first call).
pub fn connect_unix(path: &Path) -> Result<Client> {
    Ok(Client::new(Arc::new(crate::GrpcClient::over_unix_socket(
        path,
    )?)))
}

/// A lazy channel to the Unix socket at `path`.
pub(crate) fn unix_channel(path: &Path) -> Result<Channel> {
    let path = path.to_owned();
    // The URI is not used to connect: the connector dials the socket.
    let endpoint = Endpoint::from_static("http://zixiao.local")
        .timeout(crate::client::CALL_TIMEOUT)
        .connect_timeout(crate::remote::CONNECT_TIMEOUT);
    Ok(
        endpoint.connect_with_connector_lazy(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(&path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        })),
    )
}

/// A path as the wire carries it: absolute, UTF-8. Errors: `InvalidArgument`.
pub(crate) fn wire_path(field: &str, path: &Path) -> Result<String> {
    let absolute = std::path::absolute(path)
        .map_err(|e| Error::invalid(field, format!("cannot resolve `{}`: {e}", path.display())))?;
    absolute
        .to_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::invalid(field, format!("`{}` is not UTF-8", absolute.display())))
}

/// A path from the wire: absolute. Errors: `InvalidArgument`.
fn local_path(field: &str, path: String) -> std::result::Result<PathBuf, Status> {
    let path = PathBuf::from(path);
    if !path.is_absolute() {
        return Err(from_error(&Error::invalid(
            field,
            format!("`{}` is not an absolute path", path.display()),
        )));
    }
    Ok(path)
}

/// The LocalService over an [`Api`] that reaches this machine's files.
#[derive(Debug, Clone)]
struct LocalServer {
    client: Client,
}

type ImportEvents =
    Pin<Box<dyn Stream<Item = std::result::Result<pb::ImportEvent, Status>> + Send>>;

fn status(error: Error) -> Status {
    from_error(&error)
}

#[tonic::async_trait]
impl LocalService for LocalServer {
    type ImportImagesStream = ImportEvents;

    async fn import_images(
        &self,
        request: Request<pb::ImportImagesRequest>,
    ) -> std::result::Result<Response<Self::ImportImagesStream>, Status> {
        let request = request.into_inner();
        let instance_type = if request.r#type == pb::InstanceType::Unspecified as i32 {
            zixiao_core::InstanceType::Container
        } else {
            decode_instance_type(request.r#type, "type").map_err(status)?
        };
        let archive = local_path("archive", request.archive)?;
        let kind = decode_image_kind(request.kind, "kind").map_err(status)?;
        let import_as = match kind {
            ImageKind::Container => ImportAs::Container {
                name: request
                    .name
                    .as_deref()
                    .map(|n| ImageName::try_from(n).map_err(|e| status(e.on("name"))))
                    .transpose()?,
            },
            kind => ImportAs::NodeImage {
                kind,
                name: NodeImageName::try_from(request.name.unwrap_or_default()).map_err(status)?,
            },
        };
        let (events, receiver) = tokio::sync::mpsc::unbounded_channel();
        let progress_events = events.clone();
        let progress = Progress::new(move |p: ImportProgress| {
            let event = pb::import_event::Event::Progress(pb::ImportProgress {
                done: p.done,
                total: p.total,
            });
            let _ = progress_events.send(Ok(pb::ImportEvent { event: Some(event) }));
        });
        let client = self.client.clone();
        tokio::spawn(async move {
            let node = request.node.as_deref();
            let imported = match import_as {
                ImportAs::Container { name } => {
                    client
                        .import_images(node, instance_type, archive, name, progress)
                        .await
                }
                ImportAs::NodeImage { kind, name } => client
                    .import_node_image(node, archive, kind, name)
                    .await
                    .map(|image| vec![image]),
            };
            let last = match imported {
                Ok(images) => Ok(pb::ImportEvent {
                    event: Some(pb::import_event::Event::Images(pb::ImportedImages {
                        images: images.into_iter().map(Into::into).collect(),
                    })),
                }),
                Err(e) => Err(status(e)),
            };
            let _ = events.send(last);
        });
        let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(receiver);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn export_snapshot(
        &self,
        request: Request<pb::ExportSnapshotRequest>,
    ) -> std::result::Result<Response<()>, Status> {
        let request = request.into_inner();
        let to = local_path("to", request.to)?;
        self.client
            .export_snapshot(&request.instance, &request.snapshot, to)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn create_snapshot_to(
        &self,
        request: Request<pb::ExportSnapshotRequest>,
    ) -> std::result::Result<Response<pb::SnapshotInfo>, Status> {
        let request = request.into_inner();
        let to = local_path("to", request.to)?;
        let taken = self
            .client
            .create_snapshot_to(&request.instance, &request.snapshot, to)
            .await
            .map_err(status)?;
        Ok(Response::new(taken.into()))
    }

    async fn restore_instance(
        &self,
        request: Request<pb::RestoreInstanceRequest>,
    ) -> std::result::Result<Response<pb::Instance>, Status> {
        let request = request.into_inner();
        let from = local_path("from", request.from)?;
        let restored = self
            .client
            .restore_instance(&request.name, from, Wait::from(request.wait))
            .await
            .map_err(status)?;
        Ok(Response::new(restored.into()))
    }

    async fn backup_state(
        &self,
        request: Request<pb::BackupStateRequest>,
    ) -> std::result::Result<Response<pb::StoreSummary>, Status> {
        let to = local_path("to", request.into_inner().to)?;
        let summary = self.client.backup_state(to).await.map_err(status)?;
        Ok(Response::new(pb::StoreSummary {
            revision: summary.revision,
            keys: summary.keys,
            history: summary.history,
            leases: summary.leases,
        }))
    }
}

/// A client of a daemon's LocalService.
type LocalClient = crate::pb::local_service_client::LocalServiceClient<crate::client::Transport>;

/// The handling of a request that needs this machine's files, carried out
/// through the daemon's LocalService (each a future of its own, see
/// [`Handling`]): `Break` with it; any other request is given back
/// (`Continue`: it goes the usual way).
pub(crate) fn dispatch<'a, E>(
    local: &LocalClient,
    request: ApiRequest,
    error: E,
) -> ControlFlow<Handling<'a>, ApiRequest>
where
    E: Fn(Status) -> Error + Send + Sync + 'a,
{
    let local = local.clone();
    ControlFlow::Break(match request {
        ApiRequest::ImportImages {
            node,
            instance_type,
            archive,
            import_as,
            progress,
        } => import_images(
            local,
            error,
            node,
            instance_type,
            archive,
            import_as,
            progress,
        ),
        ApiRequest::ExportSnapshot { instance, name, to } => {
            export_snapshot(local, error, instance, name, to)
        }
        ApiRequest::CreateSnapshot {
            instance,
            name,
            to: Some(to),
        } => create_snapshot_to(local, error, instance, name, to),
        ApiRequest::RestoreInstance { name, from, wait } => {
            restore_instance(local, error, name, from, wait)
        }
        ApiRequest::BackupState { to } => backup_state(local, error, to),
        other => return ControlFlow::Continue(other),
    })
}

/// A reply the daemon sent that does not decode: the daemon's fault, not
/// the caller's.
fn daemon_answered(error: Error) -> Error {
    Error::Internal(format!("the daemon answered {}", error.chain()))
}

fn import_images<'a>(
    mut local: LocalClient,
    error: impl Fn(Status) -> Error + Send + Sync + 'a,
    node: Option<String>,
    instance_type: zixiao_core::InstanceType,
    archive: PathBuf,
    import_as: ImportAs,
    progress: Progress,
) -> Handling<'a> {
    Box::pin(async move {
        let kind = crate::convert::encode_image_kind(import_as.kind());
        let name = match import_as {
            ImportAs::Container { name } => name.map(String::from),
            ImportAs::NodeImage { name, .. } => Some(name.into()),
        };
        let request = pb::ImportImagesRequest {
            node,
            r#type: crate::convert::encode_instance_type(instance_type),
            archive: wire_path("archive", &archive)?,
            name,
            kind,
        };
        let mut events = local
            .import_images(request)
            .await
            .map_err(&error)?
            .into_inner();
        while let Some(event) = events.next().await {
            match event.map_err(&error)?.event {
                Some(pb::import_event::Event::Progress(p)) => progress.report(ImportProgress {
                    done: p.done,
                    total: p.total,
                }),
                Some(pb::import_event::Event::Images(done)) => {
                    let images =
                        crate::convert::decode_all(done.images).map_err(daemon_answered)?;
                    return Ok(ApiResponse::Images(images));
                }
                None => {}
            }
        }
        Err(Error::Internal(
            "the daemon ended the import without saying what it imported".to_owned(),
        ))
    })
}

/// The daemon's request to write snapshot `name` of `instance` to `to`
/// (an export, or a create straight into a directory).
fn export_request(instance: String, name: String, to: &Path) -> Result<pb::ExportSnapshotRequest> {
    Ok(pb::ExportSnapshotRequest {
        instance,
        snapshot: name,
        to: wire_path("to", to)?,
    })
}

fn export_snapshot<'a>(
    mut local: LocalClient,
    error: impl Fn(Status) -> Error + Send + Sync + 'a,
    instance: String,
    name: String,
    to: PathBuf,
) -> Handling<'a> {
    Box::pin(async move {
        let request = export_request(instance, name, &to)?;
        local.export_snapshot(request).await.map_err(&error)?;
        Ok(ApiResponse::Done)
    })
}

fn create_snapshot_to<'a>(
    mut local: LocalClient,
    error: impl Fn(Status) -> Error + Send + Sync + 'a,
    instance: String,
    name: String,
    to: PathBuf,
) -> Handling<'a> {
    Box::pin(async move {
        let request = export_request(instance, name, &to)?;
        let taken = local.create_snapshot_to(request).await.map_err(&error)?;
        let taken = taken.into_inner().try_into().map_err(daemon_answered)?;
        Ok(ApiResponse::Snapshot(taken))
    })
}

fn restore_instance<'a>(
    mut local: LocalClient,
    error: impl Fn(Status) -> Error + Send + Sync + 'a,
    name: String,
    from: PathBuf,
    wait: Wait,
) -> Handling<'a> {
    Box::pin(async move {
        let request = pb::RestoreInstanceRequest {
            name,
            from: wire_path("from", &from)?,
            wait: wait.settled(),
        };
        let restored = local.restore_instance(request).await.map_err(&error)?;
        let restored = restored.into_inner().try_into().map_err(daemon_answered)?;
        Ok(ApiResponse::Instance(restored))
    })
}

fn backup_state<'a>(
    mut local: LocalClient,
    error: impl Fn(Status) -> Error + Send + Sync + 'a,
    to: PathBuf,
) -> Handling<'a> {
    Box::pin(async move {
        let request = pb::BackupStateRequest {
            to: wire_path("to", &to)?,
        };
        let s = local
            .backup_state(request)
            .await
            .map_err(&error)?
            .into_inner();
        Ok(ApiResponse::StoreSummary(StoreSummary {
            revision: s.revision,
            keys: s.keys,
            history: s.history,
            leases: s.leases,
        }))
    })
}
