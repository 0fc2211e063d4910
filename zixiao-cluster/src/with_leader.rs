//! [`WithLeader`]: an [`Api`] wrapper that names the leading server in the
//! cluster summary. The controller counts what the store holds; which
//! replica leads is the election's business, so a server adds it around
//! the controller it serves rather than in a request handler.

use std::sync::Arc;

use async_trait::async_trait;
use zixiao_core::api::{Api, Request, Response};
use zixiao_core::store::Store;
use zixiao_core::Result;

/// `inner`, with [`Response::ClusterInfo`]'s `leader` filled from the
/// election key of `store`.
#[derive(Debug)]
pub struct WithLeader<A> {
    inner: A,
    store: Arc<dyn Store>,
}

impl<A: Api> WithLeader<A> {
    /// Wraps `inner`, reading the leader from `store`.
    pub fn new(inner: A, store: Arc<dyn Store>) -> Self {
        WithLeader { inner, store }
    }

    /// The wrapped `Api`.
    pub fn into_inner(self) -> A {
        self.inner
    }
}

#[async_trait]
impl<A: Api> Api for WithLeader<A> {
    /// As `inner` answers; a cluster summary also names the leader (`None`
    /// while no server leads). Errors: `inner`'s, and the store's.
    async fn call(&self, request: Request) -> Result<Response> {
        match self.inner.call(request).await? {
            Response::ClusterInfo(mut info) => {
                info.leader = crate::election::leader(self.store.as_ref()).await?;
                Ok(Response::ClusterInfo(info))
            }
            other => Ok(other),
        }
    }
}
