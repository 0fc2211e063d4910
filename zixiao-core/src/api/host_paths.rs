//! [`RefuseHostPaths`]: the wrapper an API served over the network goes
//! behind, so that no remote call names a file on a node (a disk, kernel,
//! initrd or snapshot directory) by its host path, and no error it answers
//! shows one (which would tell a caller where a node keeps its state, and
//! which files exist there). Only the local administrator, in process or
//! on the state directory's socket, may give paths and sees them in errors.

use async_trait::async_trait;

use super::{Api, Request, Response};
use crate::model::{
    refuse_host_paths_because, HostPathRefusal, Instance, Node, Operation, SpecOverride,
};
use crate::{DriverError, Error, Result};

/// Refuses (`InvalidArgument`, naming the field) any request whose spec
/// names a host path where the node's image store takes names; passes
/// every other request to the wrapped [`Api`], and answers its errors, and
/// the failure texts of what it returns (instances' conditions,
/// operations' errors, nodes' sweep errors and smoke tests' details), with
/// every host path in them replaced by `<host path>`
/// ([`redact_host_paths`]). The server's own logs
/// keep the whole error. A path inside a guest or container (a missing
/// program) reads the same and goes too: the server cannot tell them apart.
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
        let answer = match check_request(&request) {
            Ok(()) => self.inner.call(request).await,
            Err(refused) => Err(refused),
        };
        answer.map(redact_response).map_err(redact_host_paths)
    }
}

/// `response` with the host paths in its failure texts redacted: the
/// messages of instances' conditions (a start that failed says why) and the
/// errors of operations and of nodes' orphan sweeps, in answers and in the
/// streams of changes.
fn redact_response(response: Response) -> Response {
    use futures::StreamExt;
    match response {
        Response::Instance(mut i) => {
            redact_instance(&mut i);
            Response::Instance(i)
        }
        Response::MaybeInstance(mut i) => {
            i.iter_mut().for_each(redact_instance);
            Response::MaybeInstance(i)
        }
        Response::Instances(mut page) => {
            page.instances.iter_mut().for_each(redact_instance);
            Response::Instances(page)
        }
        Response::InstanceEvents(events) => Response::InstanceEvents(
            events
                .map(|event| {
                    event.map(|mut e| {
                        e.instance.iter_mut().for_each(redact_instance);
                        e
                    })
                })
                .map(|event| event.map_err(redact_host_paths))
                .boxed(),
        ),
        Response::Operation(mut o) => {
            redact_operation(&mut o);
            Response::Operation(o)
        }
        Response::Operations(mut page) => {
            page.operations.iter_mut().for_each(redact_operation);
            Response::Operations(page)
        }
        Response::OperationUpdates(updates) => Response::OperationUpdates(
            updates
                .map(|update| {
                    update
                        .map(|mut o| {
                            redact_operation(&mut o);
                            o
                        })
                        .map_err(redact_host_paths)
                })
                .boxed(),
        ),
        Response::Node(mut n) => {
            redact_node(&mut n);
            Response::Node(n)
        }
        Response::Nodes(mut nodes) => {
            nodes.iter_mut().for_each(redact_node);
            Response::Nodes(nodes)
        }
        Response::NodeEvents(events) => Response::NodeEvents(
            events
                .map(|event| {
                    event
                        .map(|mut e| {
                            e.node.iter_mut().for_each(redact_node);
                            e
                        })
                        .map_err(redact_host_paths)
                })
                .boxed(),
        ),
        other => other,
    }
}

fn redact_instance(instance: &mut Instance) {
    for condition in &mut instance.conditions {
        condition.message = redact(&condition.message);
    }
}

fn redact_operation(operation: &mut Operation) {
    if let Some(error) = &mut operation.error {
        error.message = redact(&error.message);
    }
}

fn redact_node(node: &mut Node) {
    if let Some(sweep) = &mut node.orphan_sweep {
        for error in &mut sweep.errors {
            *error = redact(error);
        }
    }
    // A smoke test's detail names what it booted (a kernel's path) and
    // what failed (a driver's error).
    if let Some(onboarding) = &mut node.onboarding {
        for check in &mut onboarding.checks {
            check.detail = redact(&check.detail);
        }
    }
}

/// What stands for a host path in an error a remote caller sees.
pub const REDACTED_PATH: &str = "<host path>";

/// `error` with every absolute path in its messages replaced by
/// [`REDACTED_PATH`]; its kind and field are kept, and a cause chain
/// becomes one message. A path is a `/` that starts the text or follows a
/// space, quote, backtick, `(`, `[` or `=`, and runs to the next space,
/// quote, backtick, `)`, `]`, `,` or `;` (so `10.0.0.0/24` and
/// `https://host` stay as they are).
///
/// ```
/// use zixiao_core::api::redact_host_paths;
/// use zixiao_core::{DriverError, Error};
///
/// let error = Error::Driver(DriverError::NotFound("image /var/lib/zixiao/images/disk/ab12".into()));
/// assert_eq!(redact_host_paths(error).to_string(), "image <host path> not found");
/// let error = Error::invalid("spec.image", "`/etc/shadow` is a host path; 10.0.0.0/24 stays");
/// assert_eq!(
///     redact_host_paths(error).to_string(),
///     "invalid spec.image: `<host path>` is a host path; 10.0.0.0/24 stays"
/// );
/// ```
pub fn redact_host_paths(error: Error) -> Error {
    let r = |text: String| redact(&text);
    match error {
        Error::InvalidArgument { field, reason } => Error::InvalidArgument {
            field,
            reason: r(reason),
        },
        Error::NotFound { what } => Error::NotFound { what: r(what) },
        Error::AlreadyExists { what } => Error::AlreadyExists { what: r(what) },
        Error::FailedPrecondition(m) => Error::FailedPrecondition(r(m)),
        Error::Unsupported(m) => Error::Unsupported(r(m)),
        Error::ResourceExhausted(m) => Error::ResourceExhausted(r(m)),
        Error::Conflict(m) => Error::Conflict(r(m)),
        Error::Internal(m) => Error::Internal(r(m)),
        Error::Unavailable { what, source } => Error::Unavailable {
            what: r(what),
            source: source.map(|s| Redacted::boxed(&*s)),
        },
        Error::Driver(driver) => Error::Driver(redact_driver(driver)),
        // The store's errors name keys and the store, not the nodes' files.
        other @ (Error::Store(_)
        | Error::PermissionDenied { .. }
        | Error::Unauthenticated { .. }) => other,
    }
}

fn redact_driver(error: DriverError) -> DriverError {
    let r = |text: String| redact(&text);
    match error {
        DriverError::Unsupported(m) => DriverError::Unsupported(r(m)),
        DriverError::InvalidArgument { field, reason } => DriverError::InvalidArgument {
            field,
            reason: r(reason),
        },
        DriverError::NotFound(m) => DriverError::NotFound(r(m)),
        DriverError::AlreadyExists(m) => DriverError::AlreadyExists(r(m)),
        DriverError::FailedPrecondition(m) => DriverError::FailedPrecondition(r(m)),
        DriverError::ResourceExhausted(m) => DriverError::ResourceExhausted(r(m)),
        DriverError::Unavailable { runtime, source } => DriverError::Unavailable {
            runtime: r(runtime),
            source: Redacted::boxed(&*source),
        },
        DriverError::Runtime { operation, source } => DriverError::Runtime {
            operation: r(operation),
            source: Redacted::boxed(&*source),
        },
    }
}

/// A cause chain, flattened to one redacted message.
#[derive(Debug)]
struct Redacted(String);

impl Redacted {
    fn boxed(
        error: &(dyn std::error::Error + Send + Sync + 'static),
    ) -> Box<dyn std::error::Error + Send + Sync> {
        let mut text = error.to_string();
        let mut cause = error.source();
        while let Some(e) = cause {
            text.push_str(": ");
            text.push_str(&e.to_string());
            cause = e.source();
        }
        Box::new(Redacted(redact(&text)))
    }
}

impl std::fmt::Display for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Redacted {}

/// `text` with its absolute paths replaced (see [`redact_host_paths`]).
fn redact(text: &str) -> String {
    const BEFORE: &[char] = &[' ', '`', '\'', '"', '(', '[', '=', '\n', '\t'];
    const AFTER: &[char] = &[' ', '`', '\'', '"', ')', ']', ',', ';', '\n', '\t'];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut previous: Option<char> = None;
    while let Some(c) = rest.chars().next() {
        let starts = c == '/' && previous.is_none_or(|p| BEFORE.contains(&p));
        if starts {
            let end = rest.find(AFTER).unwrap_or(rest.len());
            // A path of more than the bare `/`, without a trailing `:` of
            // the sentence (`… /a/b: cause`).
            let path = &rest[..end];
            let kept = path.len() - path.trim_end_matches([':', '.']).len();
            if path.len() - kept > 1 {
                out.push_str(REDACTED_PATH);
                out.push_str(&path[path.len() - kept..]);
                previous = path.chars().last();
                rest = &rest[end..];
                continue;
            }
        }
        out.push(c);
        previous = Some(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::redact;

    #[test]
    fn paths_go_and_everything_else_stays() {
        let cases = [
            ("/etc/shadow", "<host path>"),
            (
                "open /a/b: permission denied",
                "open <host path>: permission denied",
            ),
            (
                "copy (/a/b) to `/c d`",
                "copy (<host path>) to `<host path> d`",
            ),
            (
                "disks[0].path=/srv/x.img, read-only",
                "disks[0].path=<host path>, read-only",
            ),
            ("ends at /var/lib/zixiao.", "ends at <host path>."),
            (
                "subnet 10.0.0.0/24 on https://h:1/x",
                "subnet 10.0.0.0/24 on https://h:1/x",
            ),
            ("a / b and 1/2", "a / b and 1/2"),
            ("naïve /ü/ß path", "naïve <host path> path"),
        ];
        for (text, expected) in cases {
            assert_eq!(redact(text), expected, "{text}");
        }
    }

    /// A failed smoke test names the kernel it booted: a remote caller of
    /// `node get` sees that a check failed and why, not where the file is.
    #[test]
    fn a_nodes_smoke_test_details_lose_their_paths() {
        let node: crate::model::Node = serde_json::from_value(serde_json::json!({
            "id": "n1", "hostname": "n1", "address": "10.0.0.1:50052",
            "region": "default", "zone": "default", "role": "worker",
            "status": "onboarding_failed",
            "capacity": {"cpus": 1, "memory_mib": 512, "disk_gib": 1, "instances": 1},
            "allocated": {"cpus": 0, "memory_mib": 0, "disk_gib": 0, "instances": 0},
            "last_heartbeat": null,
            "created_at": "2026-12-06T00:00:00Z", "updated_at": "2026-12-06T00:00:00Z",
            "onboarding": {
                "state": "failed", "started_at": "2026-12-06T00:00:00Z",
                "finished_at": "2026-12-06T00:00:01Z",
                "checks": [{
                    "runtime": "microvm", "outcome": "failed", "duration_ms": 3,
                    "step": "create", "detail": "kernel /srv/smoke/vmlinux not found"
                }]
            }
        }))
        .expect("a node");
        let event = crate::controller::NodeEvent {
            kind: crate::controller::EventKind::Modified,
            revision: 1,
            node: Some(node.clone()),
            id: "n1".to_owned(),
        };
        let super::Response::Node(redacted) = super::redact_response(super::Response::Node(node))
        else {
            panic!("not a node");
        };
        let onboarding = redacted.onboarding.expect("onboarding");
        assert_eq!(onboarding.checks[0].detail, "kernel <host path> not found");

        // And in a watch of the nodes.
        let events = futures::stream::iter([Ok(event)]).boxed();
        let super::Response::NodeEvents(mut redacted) =
            super::redact_response(super::Response::NodeEvents(events))
        else {
            panic!("not node events");
        };
        let seen = futures::executor::block_on(redacted.next())
            .expect("an event")
            .expect("ok");
        let onboarding = seen.node.expect("a node").onboarding.expect("onboarding");
        assert_eq!(onboarding.checks[0].detail, "kernel <host path> not found");
    }
}
