//! The connection to one containerd: a gRPC channel over its socket, the
//! namespace every request carries, and leases that keep what a multi-step
//! operation writes safe from containerd's garbage collector until the
//! objects that reference it exist.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::{CreateRequest, DeleteRequest, ListRequest};
use containerd_client::tonic::metadata::AsciiMetadataValue;
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::Request;
use containerd_client::Client;
use zixiao_core::DriverError;

use super::error;

/// How long connecting and the first version call may take before the
/// daemon counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The label naming the instance a lease works for, so what a create cut
/// off left under its lease is found (and released) by the instance's id.
pub(crate) const INSTANCE_ID_LABEL: &str = "zixiao.io/instance-id";

/// How long a lease outlives a crash of the operation that took it: long
/// enough for any import, short enough that a crashed one leaves nothing for
/// long (containerd collects what only an expired lease held).
const LEASE_EXPIRY: chrono::Duration = chrono::Duration::hours(1);

/// A connected containerd client, scoped to one namespace.
#[derive(Clone)]
pub(crate) struct Connection {
    client_channel: Channel,
    namespace: AsciiMetadataValue,
    namespace_name: String,
    socket: PathBuf,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("socket", &self.socket)
            .field("namespace", &self.namespace_name)
            .finish()
    }
}

/// Whether `name` is a valid containerd identifier (namespaces, container
/// ids, lease ids): alphanumerics separated by single `.`, `_` or `-`.
pub(crate) fn valid_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 76
        && name
            .split(['.', '_', '-'])
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric()))
}

impl Connection {
    /// Connects to the containerd at `socket` and checks that it answers.
    /// Errors: `InvalidArgument` (a bad namespace), `Unavailable` (no socket,
    /// nobody listening, no answer in time).
    pub(crate) async fn connect(socket: &Path, namespace: &str) -> Result<Connection, DriverError> {
        if !valid_identifier(namespace) {
            return Err(error::invalid(
                "containerd namespace",
                format!("`{namespace}` is not a valid containerd namespace (letters and digits separated by . _ -)"),
            ));
        }
        let namespace_value = AsciiMetadataValue::try_from(namespace).map_err(|_| {
            error::invalid(
                "containerd namespace",
                format!("`{namespace}` is not ASCII"),
            )
        })?;
        let unavailable =
            |source: Box<dyn std::error::Error + Send + Sync>| DriverError::Unavailable {
                runtime: error::runtime_name(socket),
                source,
            };
        if !socket.exists() {
            return Err(unavailable(
                format!("the socket {} does not exist", socket.display()).into(),
            ));
        }
        let channel = tokio::time::timeout(CONNECT_TIMEOUT, containerd_client::connect(socket))
            .await
            .map_err(|_| unavailable(format!("no connection within {CONNECT_TIMEOUT:?}").into()))?
            .map_err(|e| unavailable(Box::new(e)))?;
        let connection = Connection {
            client_channel: channel,
            namespace: namespace_value,
            namespace_name: namespace.to_owned(),
            socket: socket.to_path_buf(),
        };
        let mut version = connection.client().version();
        tokio::time::timeout(CONNECT_TIMEOUT, version.version(()))
            .await
            .map_err(|_| unavailable(format!("no answer within {CONNECT_TIMEOUT:?}").into()))?
            .map_err(|e| unavailable(Box::new(e)))?;
        Ok(connection)
    }

    /// A client for any of containerd's services on this connection.
    pub(crate) fn client(&self) -> Client {
        Client::from(self.client_channel.clone())
    }

    /// `message` as a request in this connection's namespace.
    pub(crate) fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("containerd-namespace", self.namespace.clone());
        request
    }

    /// `message` as a request in this connection's namespace whose new
    /// objects `lease` holds.
    pub(crate) fn leased<T>(&self, message: T, lease: &Lease) -> Request<T> {
        let mut request = self.request(message);
        request
            .metadata_mut()
            .insert("containerd-lease", lease.value.clone());
        request
    }

    /// Maps a failed call of `operation` (see [`error::rpc`]).
    pub(crate) fn rpc_error(
        &self,
        operation: impl Into<String>,
        status: containerd_client::tonic::Status,
    ) -> DriverError {
        error::rpc(&self.socket, operation, status)
    }

    /// Takes a lease for `purpose` that expires on its own if this process
    /// dies before [`Connection::release`]; `instance` labels it with the
    /// id of the instance it works for ([`INSTANCE_ID_LABEL`]).
    pub(crate) async fn lease(
        &self,
        purpose: &str,
        instance: Option<&str>,
    ) -> Result<Lease, DriverError> {
        let id = format!("zixiao-{purpose}-{}", uuid::Uuid::new_v4().simple());
        let expiry =
            (chrono::Utc::now() + LEASE_EXPIRY).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut labels = HashMap::from([("containerd.io/gc.expire".to_owned(), expiry)]);
        if let Some(instance) = instance {
            labels.insert(INSTANCE_ID_LABEL.to_owned(), instance.to_owned());
        }
        LeasesClient::new(self.client_channel.clone())
            .create(self.request(CreateRequest {
                id: id.clone(),
                labels,
            }))
            .await
            .map_err(|s| self.rpc_error(format!("take lease for {purpose}"), s))?;
        let value = AsciiMetadataValue::try_from(id.as_str())
            .map_err(|_| error::invalid("lease", format!("`{id}` is not ASCII")))?;
        Ok(Lease { id, value })
    }

    /// The leases working for instance `instance` (see [`Connection::lease`]),
    /// or for any instance with `None`, with the id each works for.
    pub(crate) async fn instance_leases(
        &self,
        instance: Option<&str>,
    ) -> Result<Vec<(Lease, String)>, DriverError> {
        let filter = match instance {
            Some(id) => format!("labels.\"{INSTANCE_ID_LABEL}\"=={id}"),
            None => format!("labels.\"{INSTANCE_ID_LABEL}\""),
        };
        let leases = LeasesClient::new(self.client_channel.clone())
            .list(self.request(ListRequest {
                filters: vec![filter],
            }))
            .await
            .map_err(|s| self.rpc_error("list leases", s))?
            .into_inner()
            .leases;
        Ok(leases
            .into_iter()
            .filter_map(|lease| {
                let instance = lease.labels.get(INSTANCE_ID_LABEL)?.clone();
                let value = AsciiMetadataValue::try_from(lease.id.as_str()).ok()?;
                Some((
                    Lease {
                        id: lease.id,
                        value,
                    },
                    instance,
                ))
            })
            .collect())
    }

    /// Releases `lease`. With `collect`, containerd collects what only the
    /// lease held before answering, so a failed operation has left nothing
    /// behind when this returns; a successful one skips that full garbage
    /// collection, the slowest step of a container create.
    pub(crate) async fn release(&self, lease: Lease, collect: bool) -> Result<(), DriverError> {
        let request = self.request(DeleteRequest {
            id: lease.id.clone(),
            sync: collect,
        });
        match LeasesClient::new(self.client_channel.clone())
            .delete(request)
            .await
        {
            Ok(_) => Ok(()),
            Err(status) if error::is_not_found(&status) => Ok(()),
            Err(status) => Err(self.rpc_error(format!("release lease {}", lease.id), status)),
        }
    }
}

/// A lease held on containerd's garbage collector (see [`Connection::lease`]).
#[derive(Debug)]
pub(crate) struct Lease {
    id: String,
    value: AsciiMetadataValue,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_follow_containerds_rules() {
        assert!(valid_identifier("zixiao"));
        assert!(valid_identifier("zixiao-test.1_a"));
        assert!(valid_identifier("0b6f4c8e-3f2a-4d7e-9a1b-2c3d4e5f6a7b"));
        assert!(!valid_identifier(""));
        assert!(!valid_identifier("a--b"));
        assert!(!valid_identifier("-a"));
        assert!(!valid_identifier("a/b"));
        assert!(!valid_identifier("a b"));
    }
}
