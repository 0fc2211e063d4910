//! What a listener grants its peers (`zixiao_api::Limits`), over real TCP
//! and TLS on loopback: a peer that holds every connection slot keeps the
//! next client waiting, not served, until it lets go; a peer that connects
//! and never finishes its TLS handshake is cut off after the handshake
//! timeout, and its slot serves the next client.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use zixiao_api::secure::{serve_routes, ServerTls};
use zixiao_api::Limits;
use zixiao_auth::{ExpectedPeer, Pki, SubjectName};

/// How long a client waits before a call counts as not served.
const NOT_SERVED: Duration = Duration::from_secs(2);

/// Serves the health service on a loopback port within `limits`, over TLS
/// with `tls`; the address.
async fn serve(limits: Limits, tls: Option<ServerTls>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut routes = tonic::service::Routes::builder();
    zixiao_api::add_standard_services(&mut routes, &[])
        .await
        .expect("standard services");
    let routes = routes.routes();
    tokio::spawn(async move {
        serve_routes(
            routes,
            listener,
            tls.as_ref(),
            &limits,
            std::future::pending(),
        )
        .await
        .expect("serve");
    });
    addr
}

/// A server certificate for 127.0.0.1 and the client configuration that
/// trusts it, from a new cluster CA in `dir`.
fn tls(dir: &std::path::Path) -> (ServerTls, std::sync::Arc<rustls::ClientConfig>) {
    let pki = Pki::init(&dir.join("pki"), "limits").expect("pki");
    let server = ServerTls::issue(&pki, &[SubjectName::Ip([127, 0, 0, 1].into())]).expect("tls");
    let client = pki
        .trust()
        .client_config(None, ExpectedPeer::Server)
        .expect("client config");
    (server, client)
}

/// One health check over a new connection; `Err` with what went wrong,
/// including not being served within [`NOT_SERVED`].
async fn check(
    addr: SocketAddr,
    client_tls: Option<&std::sync::Arc<rustls::ClientConfig>>,
) -> Result<HealthClient<tonic::transport::Channel>, String> {
    let channel = match client_tls {
        Some(config) => zixiao_api::tls::channel(
            &format!("https://{addr}"),
            config.clone(),
            Duration::from_secs(60),
        )
        .map_err(|e| e.to_string())?,
        None => tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_lazy(),
    };
    let mut client = HealthClient::new(channel);
    let call = client.check(HealthCheckRequest::default());
    match tokio::time::timeout(NOT_SERVED, call).await {
        Ok(Ok(_)) => Ok(client),
        Ok(Err(status)) => Err(format!("refused: {status}")),
        Err(_) => Err("not served in time".to_owned()),
    }
}

#[tokio::test]
async fn a_peer_holding_every_slot_keeps_the_next_client_waiting_until_it_lets_go() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server_tls, client_tls) = tls(dir.path());
    let limits = Limits::default()
        .with_max_connections(1)
        .expect("limits")
        .with_handshake_timeout(Duration::from_secs(60))
        .expect("limits");
    let addr = serve(limits, Some(server_tls)).await;
    check(addr, Some(&client_tls))
        .await
        .expect("served while a slot is free");

    // A peer that connects and says nothing holds the one slot.
    let squatter = TcpStream::connect(addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiting = check(addr, Some(&client_tls)).await;
    assert!(waiting.is_err(), "a client was served past the limit");

    drop(squatter);
    check(addr, Some(&client_tls))
        .await
        .expect("served once the slot is free again");
}

#[tokio::test]
async fn a_peer_that_never_finishes_its_handshake_is_cut_off_and_its_slot_serves_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server_tls, client_tls) = tls(dir.path());
    let limits = Limits::default()
        .with_max_connections(1)
        .expect("limits")
        .with_handshake_timeout(Duration::from_millis(300))
        .expect("limits");
    let addr = serve(limits, Some(server_tls)).await;

    let mut squatter = TcpStream::connect(addr).await.expect("connect");
    // The server closes it: the read ends (0 bytes or a reset), it does
    // not wait for the test's own timeout.
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(30), squatter.read(&mut byte)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the silent peer was not cut off: {closed:?}"
    );
    check(addr, Some(&client_tls))
        .await
        .expect("served after the silent peer was cut off");
}

#[tokio::test]
async fn plain_listeners_count_connections_too() {
    let limits = Limits::default().with_max_connections(1).expect("limits");
    let addr = serve(limits, None).await;
    let first = check(addr, None).await.expect("the first client is served");
    let second = check(addr, None).await;
    assert!(second.is_err(), "a second client was served past the limit");
    drop(first);
    check(addr, None)
        .await
        .expect("served once the first client has gone");
}

#[test]
fn limits_of_zero_are_refused_naming_the_field() {
    let zero = Limits::default().with_max_connections(0).unwrap_err();
    assert_eq!(zero.kind(), zixiao_core::ErrorKind::InvalidArgument);
    assert!(zero.to_string().contains("max_connections"), "{zero}");
    let streams = Limits::default()
        .with_streams_per_connection(0)
        .unwrap_err();
    assert!(
        streams.to_string().contains("streams_per_connection"),
        "{streams}"
    );
    let handshake = Limits::default()
        .with_handshake_timeout(Duration::from_millis(1))
        .unwrap_err();
    assert!(
        handshake.to_string().contains("handshake_timeout"),
        "{handshake}"
    );
}
