//! Console sessions over gRPC streams: pumping a [`ConsoleStream`] into a
//! stream of `ConsoleOutput` messages (server side), and making a
//! `ConsoleOutput` stream back into a [`ConsoleStream`] (client side). The
//! user-facing and the agent-facing sessions differ only in their input
//! message, so both sides take the message's data accessor.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use zixiao_core::driver::ConsoleStream;

use crate::pb::ConsoleOutput;

/// A boxed stream of console output messages.
pub(crate) type OutputStream =
    Pin<Box<dyn Stream<Item = Result<ConsoleOutput, Status>> + Send + 'static>>;

/// Serves `console`: the bytes of the remaining `input` messages (`data`
/// takes them out of a message) go to the console; what the console prints
/// comes back as the returned stream. The session ends when either side
/// closes.
pub(crate) fn serve<M: Send + 'static>(
    console: ConsoleStream,
    mut input: Streaming<M>,
    data: fn(M) -> Option<Vec<u8>>,
) -> OutputStream {
    let ConsoleStream {
        output: mut reader,
        input: mut writer,
    } = console;
    tokio::spawn(async move {
        while let Some(Ok(message)) = input.next().await {
            if let Some(data) = data(message) {
                if writer.write_all(&data).await.is_err() || writer.flush().await.is_err() {
                    break;
                }
            }
        }
        let _ = writer.shutdown().await;
    });
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 8192];
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) => break,
                Ok(n) => {
                    let message = ConsoleOutput {
                        data: buffer[..n].to_vec(),
                    };
                    if tx.send(Ok(message)).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx
                        .send(Err(Status::unavailable(format!(
                            "console read failed: {e}"
                        ))))
                        .await;
                    break;
                }
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

/// A client-side console: `first` opens the session; what is written to the
/// returned stream's input is sent as messages `data` makes, and the
/// output messages are readable from its output.
pub(crate) async fn connect<M, F, Fut>(
    first: M,
    data: fn(Vec<u8>) -> M,
    open: F,
) -> Result<ConsoleStream, Status>
where
    M: Send + 'static,
    F: FnOnce(ReceiverStream<M>) -> Fut,
    Fut: std::future::Future<Output = Result<Streaming<ConsoleOutput>, Status>>,
{
    let (tx, rx) = mpsc::channel(16);
    tx.send(first)
        .await
        .map_err(|_| Status::internal("console input closed before it opened"))?;
    let mut output = open(ReceiverStream::new(rx)).await?;
    let (user_in, mut pump_in) = tokio::io::duplex(64 * 1024);
    let (mut pump_out, user_out) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 8192];
        loop {
            match pump_in.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(data(buffer[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    tokio::spawn(async move {
        while let Some(Ok(message)) = output.next().await {
            if pump_out.write_all(&message.data).await.is_err() {
                break;
            }
        }
        let _ = pump_out.shutdown().await;
    });
    Ok(ConsoleStream {
        output: Box::new(user_out),
        input: Box::new(user_in),
    })
}
