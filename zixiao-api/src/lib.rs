//! Zixiao's gRPC protocol (`proto/zixiao/v1/zixiao.proto`), generated with
//! tonic and prost through `protox`, so a build needs no system `protoc`:
//!
//! - [`pb`]: the generated messages, clients and server traits;
//! - [`status`]: error kinds to gRPC status codes and back, so a client
//!   gets the same [`ErrorKind`](zixiao_core::ErrorKind) and message;
//! - [`compute`]: the ComputeService server over a [`Controller`](zixiao_core::Controller);
//! - [`agent`]: the AgentService server over a node's [`NodeAgent`](zixiao_core::NodeAgent);
//! - [`remote`]: [`RemoteAgent`](remote::RemoteAgent), a `NodeAgent` whose
//!   drivers call a node's AgentService, so the same Controller drives
//!   nodes in other processes;
//! - [`network`]: [`RemoteNetworkHost`](network::RemoteNetworkHost), a
//!   `NetworkHost` that sets networks up on a node through its agent;
//! - [`client`]: typed clients of the ComputeService and ClusterService;
//! - [`reflection`]: the server reflection service.
//!
//! Model objects travel as JSON documents of zixiao-core's serde model in
//! `bytes` fields; [`json`] encodes and decodes them with errors that name
//! the field.

pub mod agent;
pub mod client;
pub mod compute;
mod console;
pub mod json;
pub mod network;
pub mod remote;
pub mod status;

/// The generated protocol: messages, clients (`*_client`) and servers (`*_server`).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("zixiao.v1");

    /// The encoded descriptor set of the protocol, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/zixiao_descriptor.bin"));
}

/// Server reflection for the whole protocol (grpcurl and friends list and call it).
pub mod reflection {
    /// The reflection service (v1) to add to a tonic server.
    ///
    /// Errors: `Internal` if the built-in descriptor set does not decode (a build bug).
    pub fn service() -> Result<
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        zixiao_core::Error,
    > {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| zixiao_core::Error::Internal(format!("server reflection: {e}")))
    }
}

/// The largest message a server or client accepts (16 MiB); larger requests
/// are refused with `RESOURCE_EXHAUSTED` before they are decoded.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
