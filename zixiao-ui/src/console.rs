//! An instance's console in the browser: a WebSocket bridged to the API's
//! console stream (`AttachConsole`). What the instance writes goes to the
//! page as binary messages; what the page sends is typed into the
//! instance. The console is attached before the upgrade, so a refusal
//! (not found, not running, unsupported) is an ordinary HTTP error.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::Path;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zixiao_core::driver::ConsoleStream;

use crate::gateway::{Caller, Reply};

/// The WebSocket subprotocol of the console. A page that must
/// authenticate also offers `zixiao.bearer.TOKEN`, since a browser's
/// WebSocket cannot send an `Authorization` header.
pub(crate) const PROTOCOL: &str = "zixiao.console";

/// The subprotocol prefix that carries a bearer token.
pub(crate) const BEARER_PROTOCOL: &str = "zixiao.bearer.";

/// The largest message the page may send: typed input, not files.
const MAX_INPUT_MESSAGE: usize = 64 * 1024;

/// How much of the instance's output one message carries at most.
const OUTPUT_CHUNK: usize = 16 * 1024;

/// `GET /api/instances/NAME/console`, upgraded to a WebSocket.
pub(crate) async fn attach(
    Caller(client): Caller,
    Path(instance): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Reply {
    let console = client.attach_console(&instance).await?;
    Ok(upgrade
        .protocols([PROTOCOL])
        .max_message_size(MAX_INPUT_MESSAGE)
        .on_upgrade(move |socket| bridge(socket, console)))
}

/// Copies the console's output to the socket and the socket's messages to
/// the console's input until either side ends.
async fn bridge(socket: WebSocket, console: ConsoleStream) {
    let (mut to_page, mut from_page) = socket.split();
    let ConsoleStream {
        mut output,
        mut input,
    } = console;
    let outbound = async {
        let mut buffer = vec![0u8; OUTPUT_CHUNK];
        loop {
            let read = match output.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            let chunk = Message::Binary(buffer[..read].to_vec().into());
            if to_page.send(chunk).await.is_err() {
                break;
            }
        }
        // The console ended: say so, so the page shows it closed.
        let _ = to_page.close().await;
    };
    let inbound = async {
        while let Some(Ok(message)) = from_page.next().await {
            let typed = match message {
                Message::Text(text) => text.as_bytes().to_vec(),
                Message::Binary(bytes) => bytes.to_vec(),
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) => continue,
            };
            if input.write_all(&typed).await.is_err() || input.flush().await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        () = outbound => {}
        () = inbound => {}
    }
}
