//! The JSON gateway: one route per operation the pages use, each parsing
//! its request, making one [`Client`] call and answering the model's own
//! serde form; the request guard ([`guard`]) that keeps other web sites
//! and other host names out; and the live event stream (`/api/events`,
//! Server-Sent Events of `WatchInstances` and `WatchNodes`).

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, RawQuery, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use zixiao_core::api::{Client, Wait};
use zixiao_core::controller::{InstanceFilter, OperationFilter};
use zixiao_core::model::SnapshotName;
use zixiao_core::{CreateInstance, Error, InstanceType};

use crate::error::ApiError;
use crate::Access;

/// The largest request body read: a create request is well under it.
pub(crate) const MAX_BODY: usize = 64 * 1024;

pub(crate) type Reply = Result<Response, ApiError>;

/// The `/api/...` routes for `access`'s callers.
pub(crate) fn router(access: Arc<Access>) -> Router {
    Router::new()
        .route("/api/session", get(session))
        .route("/api/nodes", get(nodes))
        .route("/api/nodes/{node}", get(node))
        .route("/api/nodes/{node}/stats/history", get(node_stats_history))
        .route("/api/instances", get(instances).post(create))
        .route("/api/instances/{instance}", get(instance).delete(delete))
        .route("/api/instances/{instance}/start", post(start))
        .route("/api/instances/{instance}/stop", post(stop))
        .route("/api/instances/{instance}/restart", post(restart))
        .route(
            "/api/instances/{instance}/stats/history",
            get(stats_history),
        )
        .route(
            "/api/instances/{instance}/console",
            get(crate::console::attach),
        )
        .route(
            "/api/instances/{instance}/snapshots",
            get(snapshots).post(take_snapshot),
        )
        .route(
            "/api/instances/{instance}/snapshots/{snapshot}",
            axum::routing::delete(delete_snapshot),
        )
        .route("/api/images", get(images))
        .route("/api/templates", get(templates))
        .route("/api/operations", get(operations))
        .route("/api/events", get(events))
        .route("/api/{*rest}", axum::routing::any(no_such_route))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(access)
}

/// `value` as a JSON response with `status`; never cached, since it is
/// the deployment's state of the moment.
pub(crate) fn json(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        Err(e) => {
            let error = Error::Internal(format!("the answer could not be written as JSON: {e}"));
            ApiError(error).into_response()
        }
    }
}

fn ok(value: &impl Serialize) -> Reply {
    Ok(json(StatusCode::OK, value))
}

/// The client of the request's caller: the `Authorization: Bearer` token,
/// judged by the [`Access`].
pub(crate) struct Caller(pub(crate) Client);

impl FromRequestParts<Arc<Access>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        access: &Arc<Access>,
    ) -> Result<Self, Self::Rejection> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .map(|value| zixiao_api::server::bearer_token(value.to_str().ok()))
            .or_else(|| websocket_bearer(&parts.headers));
        Ok(Caller(access.client(bearer).await?))
    }
}

/// The token a page's WebSocket offers as a subprotocol
/// (`zixiao.bearer.TOKEN`), since it cannot send an `Authorization` header.
fn websocket_bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|protocol| {
            protocol
                .trim()
                .strip_prefix(crate::console::BEARER_PROTOCOL)
        })
        .map(str::to_owned)
}

/// Whether the pages must ask for a token.
async fn session(State(access): State<Arc<Access>>) -> Reply {
    ok(&serde_json::json!({ "token_required": access.needs_token() }))
}

async fn nodes(Caller(client): Caller) -> Reply {
    ok(&client.list_nodes().await?)
}

async fn node(Caller(client): Caller, Path(node): Path<String>) -> Reply {
    ok(&client.get_node(&node).await?)
}

/// `GET /api/instances?type=container&status=running&node=N`.
async fn instances(Caller(client): Caller, RawQuery(query): RawQuery) -> Reply {
    let filter = instance_filter(query.as_deref().unwrap_or_default())?;
    ok(&client.list_instances(filter).await?)
}

async fn instance(Caller(client): Caller, Path(instance): Path<String>) -> Reply {
    ok(&client.get_instance(&instance).await?)
}

/// `GET /api/instances/NAME/stats/history`: the server's recent samples of
/// the instance's usage, oldest first (`[]` before the first sample).
async fn stats_history(Caller(client): Caller, Path(instance): Path<String>) -> Reply {
    ok(&client.instance_stats_history(&instance).await?)
}

/// `GET /api/nodes/NODE/stats/history`: the server's recent samples of
/// what the node's instances used together, oldest first (`[]` before the
/// first sample).
async fn node_stats_history(Caller(client): Caller, Path(node): Path<String>) -> Reply {
    ok(&client.node_stats_history(&node).await?)
}

/// `GET /api/instances/NAME/snapshots`: the instance's snapshots, oldest
/// first (`Unsupported`, 501, for a runtime that takes none).
async fn snapshots(Caller(client): Caller, Path(instance): Path<String>) -> Reply {
    ok(&client.list_snapshots(&instance).await?)
}

/// The body of `POST /api/instances/NAME/snapshots`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TakeSnapshot {
    name: String,
}

/// `POST /api/instances/NAME/snapshots` with `{"name": "..."}`: takes the
/// snapshot (the API's `CreateSnapshot`, kept on the node) and answers it,
/// 201.
async fn take_snapshot(
    Caller(client): Caller,
    Path(instance): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let request: TakeSnapshot = parse_json(&headers, &body)?;
    let name = SnapshotName::try_from(request.name)?;
    let taken = client.create_snapshot(&instance, name.as_str()).await?;
    Ok(json(StatusCode::CREATED, &taken))
}

/// `DELETE /api/instances/NAME/snapshots/SNAPSHOT`: `null` once the
/// snapshot is gone (the API's `DeleteSnapshot`).
async fn delete_snapshot(
    Caller(client): Caller,
    Path((instance, snapshot)): Path<(String, String)>,
) -> Reply {
    let name = SnapshotName::try_from(snapshot)?;
    client.delete_snapshot(&instance, name.as_str()).await?;
    ok(&())
}

/// `GET /api/images?node=NODE&type=TYPE`: what the node's runtime for
/// `type` (default `container`) holds, with, for containers, the disks,
/// kernels and initrds of its image store. Without `node`, the only node
/// there is (the API refuses the question in a cluster of several).
async fn images(Caller(client): Caller, RawQuery(query): RawQuery) -> Reply {
    let (node, instance_type) = image_filter(query.as_deref().unwrap_or_default())?;
    ok(&client.list_images(node.as_deref(), instance_type).await?)
}

/// `GET /api/templates`: every template with its versions and the
/// instances using each.
async fn templates(Caller(client): Caller) -> Reply {
    ok(&client.list_templates().await?)
}

/// The most operations `GET /api/operations` answers.
const OPERATIONS_SHOWN: usize = 100;

/// `GET /api/operations?target=NAME`: the operations kept (only those on
/// instance, node or image `NAME`, when given), newest first, at most
/// [`OPERATIONS_SHOWN`].
async fn operations(Caller(client): Caller, RawQuery(query): RawQuery) -> Reply {
    let filter = operation_filter(query.as_deref().unwrap_or_default())?;
    let mut operations = client.list_all_operations(filter).await?;
    operations.reverse();
    operations.truncate(OPERATIONS_SHOWN);
    ok(&operations)
}

/// `POST /api/instances` with a `CreateInstance` (the CLI's `-f` spec
/// form); answers once the instance has settled, so it works the same
/// whether or not a background loop converges this deployment.
async fn create(Caller(client): Caller, headers: HeaderMap, body: Bytes) -> Reply {
    let request: CreateInstance = parse_json(&headers, &body)?;
    let created = client.create_instance(request, Wait::Settled).await?;
    Ok(json(StatusCode::CREATED, &created))
}

async fn start(Caller(client): Caller, Path(instance): Path<String>) -> Reply {
    ok(&client.start_instance(&instance, Wait::Settled).await?)
}

async fn stop(Caller(client): Caller, Path(instance): Path<String>) -> Reply {
    ok(&client.stop_instance(&instance, Wait::Settled).await?)
}

async fn restart(Caller(client): Caller, Path(instance): Path<String>) -> Reply {
    ok(&client.restart_instance(&instance, Wait::Settled).await?)
}

/// `DELETE /api/instances/NAME`: `null` once it is gone, else the
/// instance as it is (its conditions say what holds it up).
async fn delete(Caller(client): Caller, Path(instance): Path<String>) -> Reply {
    ok(&client.delete_instance(&instance, Wait::Settled).await?)
}

async fn no_such_route(method: Method, Path(rest): Path<String>) -> Reply {
    Err(Error::not_found(format!("API route `{method} /api/{rest}`")).into())
}

/// `GET /api/events`: every instance and node change from now on, as
/// Server-Sent Events named `instance` and `node` whose data is the API's
/// event. A failed watch sends one `error` event and ends the stream (the
/// page then reconnects).
async fn events(Caller(client): Caller) -> Reply {
    let instances = client.watch_instances(0).await?;
    let nodes = client.watch_nodes(0).await?;
    // Each change as its event, at once: the two event types differ too
    // much in size to share an enum cheaply.
    let changes = futures::stream::select(
        instances.map(|event| event.map(|event| sse("instance", &event))),
        nodes.map(|event| event.map(|event| sse("node", &event))),
    );
    let events = changes
        .scan(false, |failed, change| {
            let event = match (*failed, change) {
                (true, _) => None,
                (false, Ok(event)) => Some(event),
                (false, Err(e)) => {
                    *failed = true;
                    let body = crate::error::body(e.kind(), &crate::error::message(&e));
                    Some(sse("error", &body))
                }
            };
            std::future::ready(event)
        })
        .map(Ok::<_, Infallible>);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn sse(name: &str, data: &impl Serialize) -> Event {
    let data = serde_json::to_string(data).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    Event::default().event(name).data(data)
}

/// Parses a query string into an instance filter: `type`, `status` and
/// `node`, each at most once; anything else is refused, naming it.
fn instance_filter(query: &str) -> Result<InstanceFilter, Error> {
    let mut filter = InstanceFilter::default();
    for (key, value) in query_pairs(query) {
        match key {
            "type" => filter.instance_type = Some(enum_value("type", value)?),
            "status" => filter.status = Some(enum_value("status", value)?),
            "node" => filter.node = Some(value.to_owned()),
            other => {
                return Err(Error::invalid(
                    other,
                    "not a filter of the instance list: use type, status or node",
                ))
            }
        }
    }
    Ok(filter)
}

/// The `key=value` pairs of a query string that have a value: an empty
/// value (an empty select in a page's filter) is no constraint.
fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(_, value)| !value.is_empty())
}

/// The image list's node and instance type from its query string: `node`
/// and `type` (default `container`); anything else is refused, naming it.
fn image_filter(query: &str) -> Result<(Option<String>, InstanceType), Error> {
    let (mut node, mut instance_type) = (None, InstanceType::Container);
    for (key, value) in query_pairs(query) {
        match key {
            "node" => node = Some(value.to_owned()),
            "type" => instance_type = enum_value("type", value)?,
            other => {
                return Err(Error::invalid(
                    other,
                    "not a parameter of the image list: use node or type",
                ))
            }
        }
    }
    Ok((node, instance_type))
}

/// The operation list's filter from its query string: `target=NAME`.
fn operation_filter(query: &str) -> Result<OperationFilter, Error> {
    let mut filter = OperationFilter::default();
    for (key, value) in query_pairs(query) {
        match key {
            "target" => filter.target = Some(value.to_owned()),
            other => {
                return Err(Error::invalid(
                    other,
                    "not a filter of the operation list: use target",
                ))
            }
        }
    }
    Ok(filter)
}

/// One of the model's snake_case enum values, such as an instance status.
fn enum_value<T: DeserializeOwned>(field: &str, value: &str) -> Result<T, Error> {
    serde_json::from_value(serde_json::Value::String(value.to_owned()))
        .map_err(|e| Error::invalid(field, e.to_string()))
}

/// A JSON request body as `T`; a wrong content type, malformed JSON or a
/// wrong field is `InvalidArgument` naming the field's path.
fn parse_json<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, Error> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/json") {
        return Err(Error::invalid(
            "Content-Type",
            format!("`{content_type}` is not application/json"),
        ));
    }
    let mut reader = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut reader).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "body".to_owned() } else { path };
        Error::invalid(field, e.into_inner().to_string())
    })
}

/// Refuses a request that another web site made through the user's
/// browser (a changing method or a WebSocket whose `Origin` is not the
/// dashboard's own)
/// and, for [`Access::Local`], one that names a host other than loopback
/// (a DNS name rebound to 127.0.0.1 by a web site).
pub(crate) async fn guard(
    State(access): State<Arc<Access>>,
    request: Request,
    next: Next,
) -> Response {
    match check_request(&access, request.method(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(e) => ApiError(e).into_response(),
    }
}

fn check_request(access: &Access, method: &Method, headers: &HeaderMap) -> Result<(), Error> {
    let host = text(headers.get(header::HOST));
    if matches!(access, Access::Local(_)) && !is_loopback_host(host) {
        return Err(Error::PermissionDenied {
            permission: format!(
                "the local dashboard answers only to a loopback host name such as 127.0.0.1, \
                 not `{host}`"
            ),
        });
    }
    // A WebSocket (the console) types into an instance: it changes things
    // although it is a GET, and browsers let any site open one.
    let upgrade = headers.contains_key(header::UPGRADE);
    let changes = upgrade || !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if let (true, Some(origin)) = (changes, headers.get(header::ORIGIN)) {
        let origin = text(Some(origin));
        let own = [format!("http://{host}"), format!("https://{host}")];
        if !own.iter().any(|own| own == origin) {
            return Err(Error::PermissionDenied {
                permission: format!(
                    "a request from `{origin}` to change something: only the dashboard's own \
                     pages may"
                ),
            });
        }
    }
    Ok(())
}

fn text(value: Option<&HeaderValue>) -> &str {
    value
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
}

/// Whether a `Host` header names this machine's loopback: `localhost`,
/// `127.0.0.1` or `[::1]`, with any port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_takes_type_status_and_node_and_names_anything_else() {
        let filter = instance_filter("type=container&status=running&node=n1").unwrap();
        assert_eq!(
            filter.instance_type,
            Some(zixiao_core::InstanceType::Container)
        );
        assert_eq!(filter.status, Some(zixiao_core::InstanceStatus::Running));
        assert_eq!(filter.node.as_deref(), Some("n1"));
        assert_eq!(
            instance_filter("type=&status=").unwrap(),
            InstanceFilter::default()
        );
        let error = instance_filter("status=sleepy").unwrap_err().to_string();
        assert!(
            error.starts_with("invalid status: unknown variant `sleepy`"),
            "{error}"
        );
        let error = instance_filter("colour=red").unwrap_err().to_string();
        assert!(error.starts_with("invalid colour"), "{error}");
    }

    #[test]
    fn the_image_list_takes_a_node_and_a_type_and_names_anything_else() {
        assert_eq!(image_filter("").unwrap(), (None, InstanceType::Container));
        assert_eq!(
            image_filter("node=n1&type=microvm").unwrap(),
            (Some("n1".to_owned()), InstanceType::Microvm)
        );
        let error = image_filter("type=floppy").unwrap_err().to_string();
        assert!(error.starts_with("invalid type"), "{error}");
        let error = image_filter("tag=latest").unwrap_err().to_string();
        assert!(error.starts_with("invalid tag"), "{error}");
    }

    #[test]
    fn a_websocket_carries_its_token_as_a_subprotocol() {
        let mut headers = HeaderMap::new();
        assert_eq!(websocket_bearer(&headers), None);
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("zixiao.console, zixiao.bearer.zx_abc"),
        );
        assert_eq!(websocket_bearer(&headers).as_deref(), Some("zx_abc"));
    }

    #[test]
    fn only_loopback_host_names_reach_the_local_dashboard() {
        for host in [
            "127.0.0.1:8080",
            "localhost:1",
            "[::1]:9",
            "LOCALHOST",
            "127.0.0.2:5",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["evil.example:8080", "10.0.0.1:80", "", "[fe80::1]:80"] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
