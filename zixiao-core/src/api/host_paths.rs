//! [`RefuseHostPaths`]: the wrapper an API served over the network goes
//! behind, so that no remote call names a file on a node (a disk, kernel,
//! initrd or snapshot directory) by its host path. Only the local
//! administrator, in process or on the state directory's socket, may.

use async_trait::async_trait;

use super::{Api, Request, Response};
use crate::model::{refuse_host_paths_because, HostPathRefusal, SpecOverride};
use crate::{Error, Result};

/// Refuses (`InvalidArgument`, naming the field) any request whose spec
/// names a host path where the node's image store takes names; passes
/// every other request to the wrapped [`Api`].
#[derive(Debug)]
pub struct RefuseHostPaths<A> {
    inner: A,
}

impl<A> RefuseHostPaths<A> {
    /// Wraps `inner`.
    pub fn new(inner: A) -> Self {
        RefuseHostPaths { inner }
    }

    /// The wrapped API.
    pub fn into_inner(self) -> A {
        self.inner
    }
}

/// Checks `request` as [`RefuseHostPaths`] does: the specs of instance
/// creates and template versions, and the `image=` overrides of a create
/// from a template. Errors: `InvalidArgument` naming the field.
pub fn check_request(request: &Request) -> Result<()> {
    check_request_because(request, HostPathRefusal::OverTheNetwork)
}

/// [`check_request`], a refusal giving `refusal`'s reason. With
/// [`HostPathRefusal::NodeSetting`] (a node whose `allow_host_paths` is
/// off) a restore from a snapshot directory is refused too: over the
/// network the permission layer keeps that to admins, but a node that takes
/// no paths takes none from anyone.
pub fn check_request_because(request: &Request, refusal: HostPathRefusal) -> Result<()> {
    match request {
        Request::CreateInstance { request, .. } => {
            refuse_host_paths_because(&request.spec, refusal)
        }
        Request::CreateTemplate { spec, .. } | Request::UpdateTemplate { spec, .. } => {
            refuse_host_paths_because(&spec.spec, refusal)
        }
        Request::RestoreInstance { from, .. } if refusal == HostPathRefusal::NodeSetting => {
            Err(Error::invalid(
                "from",
                format!(
                    "`{}` is a host path, and {}; {}",
                    from.display(),
                    refusal.reason(),
                    refusal.restore_hint()
                ),
            ))
        }
        Request::CreateFromTemplate { request, .. } => {
            for set in &request.set {
                if let SpecOverride::Image(image) = set {
                    if image.starts_with('/') {
                        return Err(Error::invalid(
                            "set.image",
                            format!(
                                "`{image}` is a host path, and {}; import the file as an image \
                                 with `zixiao image import --kind disk` and name the image",
                                refusal.reason()
                            ),
                        ));
                    }
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[async_trait]
impl<A: Api> Api for RefuseHostPaths<A> {
    async fn call(&self, request: Request) -> Result<Response> {
        check_request(&request)?;
        self.inner.call(request).await
    }
}
