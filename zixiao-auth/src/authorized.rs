//! [`Authorized`]: the wrapper over an [`Api`] that lets a call through
//! only if [`authorize`] allows its caller to make it, and [`secure`], the
//! usual stack `Authorized<Audited<A>>` built per caller.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use zixiao_core::api::{Api, Request, Response};
use zixiao_core::{Error, Instance, Result};

use crate::accounts::Role;
use crate::audit::{AuditEntry, AuditLog, Audited, Outcome};
use crate::error::Rejection;
use crate::identity::{Caller, Credential, Identity};
use crate::names::ProjectName;
use crate::permission::{
    authorize, instance_ref_mut, judged_as, operation_project, operation_ref, operation_visible,
    project_of, project_ref, Denial, ProjectRef, Scope, PROJECT_LABEL,
};

/// An [`Api`] that carries out a call only if its caller may make it.
/// Built per caller, with the [`Caller`] the transport established.
///
/// - A caller without an identity gets `Unauthenticated` for every call.
/// - A call naming an instance is judged in the instance's project, found
///   with a `GetInstance` through the inner `Api`; once allowed, the call
///   names the instance by id, so it cannot reach another instance that
///   took the name meanwhile.
/// - A refused call gets `PermissionDenied` naming the missing permission,
///   and reaches nothing: the inner `Api` sees at most the lookup.
/// - Lists and watches of instances are filtered to the caller's projects.
/// - An operation is read and cancelled as its target is (an instance in
///   its project, a node); lists of operations are filtered alike.
/// - A token created without an owner is the calling user's own.
///
/// With [`Authorized::record_refusals`], every refusal (and every changing
/// call it ends itself, such as one naming a missing instance) is written
/// to an [`AuditLog`].
pub struct Authorized<A> {
    inner: A,
    caller: Caller,
    audit: Option<Arc<AuditLog>>,
}

impl<A> Authorized<A> {
    /// Authorizes `caller`'s calls to `inner`.
    pub fn new(inner: A, caller: impl Into<Caller>) -> Self {
        Authorized {
            inner,
            caller: caller.into(),
            audit: None,
        }
    }

    /// Also records refusals in `log`.
    pub fn record_refusals(mut self, log: Arc<AuditLog>) -> Self {
        self.audit = Some(log);
        self
    }

    /// The caller it judges.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// The wrapped `Api`.
    pub fn inner(&self) -> &A {
        &self.inner
    }

    /// The wrapped `Api`, unwrapped.
    pub fn into_inner(self) -> A {
        self.inner
    }
}

impl<A: fmt::Debug> fmt::Debug for Authorized<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorized")
            .field("inner", &self.inner)
            .field("caller", &self.caller)
            .finish_non_exhaustive()
    }
}

impl<A: Api> Authorized<A> {
    /// Records that this wrapper ended `request` itself, if a log is set
    /// and the call is worth a record (a refusal, or a changing call).
    async fn record(&self, request: &Request, project: Option<ProjectName>, outcome: Outcome) {
        let Some(log) = &self.audit else { return };
        let refusal = matches!(
            outcome,
            Outcome::Denied { .. } | Outcome::Unauthenticated { .. }
        );
        if refusal || request.is_mutating() {
            log.record_or_log(AuditEntry::new(&self.caller, request, project, outcome))
                .await;
        }
    }

    async fn refuse(&self, request: &Request, rejection: Rejection) -> Error {
        let reason = rejection.to_string();
        self.record(
            request,
            None,
            Outcome::Unauthenticated {
                reason: reason.clone(),
            },
        )
        .await;
        Error::unauthenticated(reason)
    }

    async fn deny(&self, request: &Request, project: Option<ProjectName>, denial: Denial) -> Error {
        self.record(request, project, crate::audit::denied(&denial))
            .await;
        Error::permission_denied(denial.to_string())
    }

    /// Ends `request` with `error` (and records it).
    async fn fail(&self, request: &Request, error: Error) -> Error {
        self.record(request, None, Outcome::Failed { kind: error.kind() })
            .await;
        error
    }
}

#[async_trait]
impl<A: Api> Api for Authorized<A> {
    async fn call(&self, mut request: Request) -> Result<Response> {
        let identity = match &self.caller {
            Caller::Identified(identity) => identity,
            Caller::Anonymous => return Err(self.refuse(&request, Rejection::NoCredentials).await),
            Caller::Rejected(rejection) => {
                return Err(self.refuse(&request, rejection.clone()).await)
            }
        };
        // A node's agent reads the networks it sets up (every node sets up
        // every network), to take the cluster's copy instead of its caller's.
        if let (Identity::Node(_), Request::GetNetwork { .. }) = (identity, &request) {
            return self.inner.call(request).await;
        }
        // A node's agent reads the instances placed on it (before it
        // starts one, and to re-adopt its own after a restart), and the
        // ones migrating to it live (before it prepares for one), and only
        // those: any other is, to it, not there.
        if let (Identity::Node(node), Request::GetInstance { instance }) = (identity, &request) {
            let lookup = Request::GetInstance {
                instance: instance.clone(),
            };
            return match self.inner.call(lookup).await? {
                Response::Instance(found)
                    if found.node.as_deref() == Some(node.as_str())
                        || found.live_migration_target() == Some(node.as_str()) =>
                {
                    Ok(Response::Instance(found))
                }
                _ => Err(Error::not_found(format!(
                    "instance `{instance}` on node `{node}`"
                ))),
            };
        }
        // An admin may do anything anywhere: no lookup needed.
        let judged = matches!(identity, Identity::User { role, .. } if *role != Role::Admin);
        // An operation is judged by its target, found in the operation. An
        // image's operation has none to be judged by: it is judged below as
        // images are, and a read of it answers with this lookup.
        let mut image_operation = None;
        if let (true, Some(id)) = (judged, operation_ref(&request)) {
            let lookup = Request::GetOperation { id: id.clone() };
            let operation = match self.inner.call(lookup).await {
                Ok(Response::Operation(operation)) => operation,
                Ok(other) => {
                    let error = Error::Internal(format!(
                        "operation.get answered {}, not Operation",
                        other.kind()
                    ));
                    return Err(self.fail(&request, error).await);
                }
                Err(error) => return Err(self.fail(&request, error).await),
            };
            if let Some(stand_in) = judged_as(&operation, request.is_mutating()) {
                let project = operation_project(&operation);
                if let Err(denial) = authorize(identity, &stand_in, project.as_ref()) {
                    let denial = Denial {
                        operation: request.operation().to_owned(),
                        ..denial
                    };
                    return Err(self.deny(&request, project, denial).await);
                }
                if matches!(request, Request::GetOperation { .. }) {
                    // The lookup was the call.
                    return Ok(Response::Operation(operation));
                }
                return self.inner.call(request).await;
            }
            image_operation = Some(operation);
        }
        // A create names its project in a label: checked for everyone, so
        // no instance is made that only an admin could reach again.
        let reference = match project_ref(&request) {
            Ok(reference) => reference,
            Err(invalid) => {
                let error = Error::invalid(format!("labels.{PROJECT_LABEL}"), invalid.reason);
                return Err(self.fail(&request, error).await);
            }
        };
        let mut found: Option<Instance> = None;
        let project = match reference {
            ProjectRef::Known(project) => Some(project),
            ProjectRef::None => None,
            ProjectRef::Instance(_) if !judged => None,
            ProjectRef::Instance(instance) => {
                let lookup = Request::GetInstance {
                    instance: instance.to_owned(),
                };
                match self.inner.call(lookup).await {
                    Ok(Response::Instance(instance)) => {
                        // An invalid label leaves the project unknown:
                        // only an admin may act on that instance.
                        let project = project_of(&instance).ok();
                        found = Some(instance);
                        project
                    }
                    Ok(other) => {
                        let error = Error::Internal(format!(
                            "instance.get answered {}, not Instance",
                            other.kind()
                        ));
                        return Err(self.fail(&request, error).await);
                    }
                    Err(error) => return Err(self.fail(&request, error).await),
                }
            }
        };
        let grant = match authorize(identity, &request, project.as_ref()) {
            Ok(grant) => grant,
            Err(denial) => return Err(self.deny(&request, project, denial).await),
        };
        if let (Some(operation), Request::GetOperation { .. }) = (image_operation, &request) {
            // The lookup was the call.
            return Ok(Response::Operation(operation));
        }
        // A token made without naming its owner is the caller's own.
        if let Request::CreateToken {
            owner: owner @ None,
            ..
        } = &mut request
        {
            if let Identity::User {
                name,
                via: Credential::Token(_) | Credential::Certificate,
                ..
            } = identity
            {
                *owner = Some(name.to_string());
            }
        }
        if let Some(instance) = found {
            if matches!(request, Request::GetInstance { .. }) {
                // The lookup was the call.
                return Ok(Response::Instance(instance));
            }
            if let Some(reference) = instance_ref_mut(&mut request) {
                *reference = instance.id;
            }
        }
        let response = self.inner.call(request).await?;
        match grant.scope {
            Scope::All => Ok(response),
            Scope::Projects(projects) => filter_to_projects(response, &projects),
            scope @ Scope::Operations { .. } => match response {
                // A page may come out shorter; its token still goes on after it.
                Response::Operations(mut page) => {
                    page.operations.retain(|o| operation_visible(o, &scope));
                    Ok(Response::Operations(page))
                }
                other => Err(Error::Internal(format!(
                    "cannot filter a {} answer to the operations the caller may read",
                    other.kind()
                ))),
            },
        }
    }
}

/// Keeps only the instances of `projects` in a list or watch answer.
/// Any other answer cannot be filtered: `Internal` (fail closed).
fn filter_to_projects(response: Response, projects: &BTreeSet<ProjectName>) -> Result<Response> {
    let visible =
        |instance: &Instance| project_of(instance).is_ok_and(|project| projects.contains(&project));
    match response {
        // A page may come out shorter; its token still goes on after it.
        Response::Instances(mut page) => {
            page.instances.retain(visible);
            Ok(Response::Instances(page))
        }
        Response::InstanceEvents(events) => {
            let projects = projects.clone();
            let events = events.filter(move |event| {
                let keep = match event {
                    Ok(event) => event.instance.as_ref().is_some_and(|instance| {
                        project_of(instance).is_ok_and(|project| projects.contains(&project))
                    }),
                    // An error ends the stream and names no instance.
                    Err(_) => true,
                };
                futures::future::ready(keep)
            });
            Ok(Response::InstanceEvents(events.boxed()))
        }
        other => Err(Error::Internal(format!(
            "cannot filter a {} answer to the caller's projects",
            other.kind()
        ))),
    }
}

/// The usual stack for one caller: `Authorized<Audited<A>>`, both writing
/// to `log`: `Audited` records what was allowed, `Authorized` what it
/// refused.
///
/// ```no_run
/// # async fn example(
/// #     controller: std::sync::Arc<dyn zixiao_core::Api>,
/// #     authenticator: zixiao_auth::Authenticator,
/// #     log: std::sync::Arc<zixiao_auth::AuditLog>,
/// #     bearer: Option<&str>,
/// # ) -> Result<(), Box<dyn std::error::Error>> {
/// use zixiao_core::Client;
///
/// // Per call (or per connection): who is calling, then the stack.
/// let caller = authenticator.caller(bearer, None).await?;
/// let api = zixiao_auth::secure(controller, caller, log);
/// let nodes = Client::new(std::sync::Arc::new(api)).list_nodes().await?;
/// # Ok(()) }
/// ```
pub fn secure<A: Api>(
    inner: A,
    caller: impl Into<Caller>,
    log: Arc<AuditLog>,
) -> Authorized<Audited<A>> {
    let caller = caller.into();
    Authorized::new(Audited::new(inner, log.clone(), caller.clone()), caller).record_refusals(log)
}
