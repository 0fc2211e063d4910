//! Zixiao's gRPC protocol (`proto/zixiao/v1/*.proto`), generated with tonic
//! and prost through `protox`, so a build needs no system `protoc`:
//!
//! - [`pb`]: the generated messages, clients and server traits;
//! - [`convert`]: zixiao-core's model to the messages and back, checking
//!   what comes from the wire;
//! - [`status`]: errors to gRPC statuses with standard details, and back;
//! - [`server`]: the user-facing services over any [`Api`](zixiao_core::Api);
//! - [`client`]: [`GrpcClient`], the same `Api` over
//!   gRPC, and [`connect`] (plain) and [`connect_with`] (TLS, a token);
//! - [`secure`]: who each call of a server comes from and the `Api` it is
//!   served with ([`AuthScope`](secure::AuthScope)); [`tls`]: the TLS
//!   listener and connector; [`limits`]: what a server grants its peers
//!   (connections, calls at once, time);
//! - [`membership`]: the client agents use to join a cluster;
//! - [`agent`]: the AgentService over a node's [`NodeAgent`](zixiao_core::NodeAgent);
//! - [`remote`]: [`RemoteAgent`](remote::RemoteAgent), a `NodeAgent` whose
//!   drivers call a node's AgentService, so the same Controller drives
//!   nodes in other processes;
//! - [`network`]: [`RemoteNetworkHost`](network::RemoteNetworkHost), a
//!   `NetworkHost` that sets networks up on a node through its agent;
//! - [`reflection`] and [`health`]: the standard services every server and
//!   agent adds.

pub mod agent;
pub mod client;
mod console;
pub mod convert;
pub mod limits;
pub mod local;
pub mod membership;
pub mod network;
pub mod remote;
pub mod secure;
pub mod server;
pub mod status;
pub mod tls;

pub use client::{connect, GrpcClient};
pub use limits::Limits;
pub use local::{connect_unix, serve_unix};
pub use secure::{connect_with, ConnectOptions};

/// The generated protocol: messages, clients (`*_client`) and servers (`*_server`).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("zixiao.v1");

    /// The encoded descriptor set of the protocol, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/zixiao_descriptor.bin"));
}

/// Server reflection for the whole protocol, in both versions of the
/// reflection protocol (grpcurl speaks v1, Python's grpcio-reflection
/// v1alpha), so any client lists and calls the services without our files.
pub mod reflection {
    use tonic::service::RoutesBuilder;

    /// Adds the reflection services (v1 and v1alpha) to `routes`.
    ///
    /// Errors: `Internal` if the built-in descriptor sets do not decode (a build bug).
    pub fn add_to(routes: &mut RoutesBuilder) -> Result<(), zixiao_core::Error> {
        let builder = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let broken = |e: tonic_reflection::server::Error| {
            zixiao_core::Error::Internal(format!("server reflection: {e}"))
        };
        routes.add_service(builder().build_v1().map_err(broken)?);
        routes.add_service(builder().build_v1alpha().map_err(broken)?);
        Ok(())
    }
}

/// The standard health service (`grpc.health.v1.Health`): a server or an
/// agent reports the whole server and each of its services serving for as
/// long as it serves.
pub mod health {
    use tonic::service::RoutesBuilder;
    pub use tonic_health::server::HealthReporter;

    /// Adds the health service to `routes`, with the whole server and each
    /// of `services` (full names, such as `zixiao.v1.InstanceService`)
    /// serving; the reporter changes what it answers.
    pub async fn add_to(routes: &mut RoutesBuilder, services: &[&str]) -> HealthReporter {
        let (reporter, service) = tonic_health::server::health_reporter();
        for name in services {
            reporter
                .set_service_status(*name, tonic_health::ServingStatus::Serving)
                .await;
        }
        routes.add_service(service);
        reporter
    }
}

/// Adds the services every Zixiao server and agent offers besides its own
/// to `routes`: reflection ([`reflection::add_to`]) and health
/// ([`health::add_to`]) with `services` serving.
///
/// Errors: `Internal` (a build bug, see [`reflection::add_to`]).
pub async fn add_standard_services(
    routes: &mut tonic::service::RoutesBuilder,
    services: &[&str],
) -> Result<health::HealthReporter, zixiao_core::Error> {
    reflection::add_to(routes)?;
    Ok(health::add_to(routes, services).await)
}

/// The largest message a server or client accepts (16 MiB); larger requests
/// are refused with `RESOURCE_EXHAUSTED` before they are decoded.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The most log bytes one message carries: reads and follows are cut into
/// pieces of at most this size, well under [`MAX_MESSAGE_BYTES`].
pub const MAX_LOG_CHUNK: usize = MAX_MESSAGE_BYTES / 2;

// The README's examples are compiled (and run, unless `no_run`) as doctests,
// so what crates.io shows keeps matching the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
