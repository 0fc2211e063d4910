//! Zixiao's OCI distribution client: pulls a container image from a
//! registry over the HTTP API v2 (`/v2/<repo>/manifests/<ref>` and
//! `/v2/<repo>/blobs/<digest>`) and hands it over as an OCI image layout tar
//! that the node's runtime imports like a local archive, so pulled and
//! imported images take one path into the image store.
//!
//! Nothing the registry says is trusted: a pinned manifest digest, every
//! index entry and every blob is hashed and measured against its descriptor
//! while it streams; manifests, configs and layers have size caps; digests
//! are checked before they reach a URL or a file name. HTTPS is the
//! default; plain HTTP goes only to loopback registries and those listed as
//! insecure (and redirects and token servers obey the same rule).
//! Anonymous pulls, the bearer-token flow (`WWW-Authenticate: Bearer
//! realm=…`) and basic auth are supported.
//!
//! Modules: [`manifest`] (media types, platform choice), [`docker_config`]
//! (credentials from a docker-style `config.json`), `transport`
//! (HTTP(S), redirects, the plain-HTTP rule), `auth` (challenges, tokens),
//! `layout` (the verified tar), `pull` (the flow), `error`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), zixiao_registry::RegistryError> {
//! use zixiao_core::driver::PullOptions;
//! use zixiao_core::model::ImageRef;
//! let reference = ImageRef::try_from("127.0.0.1:5000/busybox:1").unwrap();
//! let pulled = zixiao_registry::pull(&reference, &PullOptions::default(), "/tmp".as_ref(), &|_| {}).await?;
//! println!("{} is at {}", pulled.name, pulled.archive().display());
//! # Ok(()) }
//! ```

mod auth;
pub mod docker_config;
mod error;
mod layout;
pub mod manifest;
mod pull;
mod transport;

pub use error::RegistryError;
pub use pull::{
    pull, pull_artifact, PulledArtifact, PulledImage, MAX_CONFIG_BYTES, MAX_LAYER_BYTES,
    MAX_MANIFEST_BYTES,
};

// The README's examples are compiled (and run, unless `no_run`) as doctests,
// so what crates.io shows keeps matching the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
