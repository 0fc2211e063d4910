//! Console sessions over gRPC streams: pumping a [`ConsoleStream`] into a
//! stream of `ConsoleOutput` messages (server side), and making a
//! `ConsoleOutput` stream back into a [`ConsoleStream`] (client side).

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};
use zixiao_core::driver::ConsoleStream;

use crate::pb::{console_input, ConsoleInput, ConsoleOutput};

/// A boxed stream of console output messages.
pub(crate) type OutputStream =
    Pin<Box<dyn Stream<Item = Result<ConsoleOutput, Status>> + Send + 'static>>;

/// Serves `console`: bytes typed in the remaining `input` messages go to the
/// console; what the console prints comes back as the returned stream. The
/// session ends when either side closes.
pub(crate) fn serve(console: ConsoleStream, mut input: Streaming<ConsoleInput>) -> OutputStream {
    let ConsoleStream {
        output: mut reader,
        input: mut writer,
    } = console;
    tokio::spawn(async move {
        while let Some(Ok(message)) = input.next().await {
            if let Some(console_input::Input::Data(data)) = message.input {
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
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// A client-side console: `first` opens the session; what is written to the
/// returned stream's input is sent as data messages, and the `output`
/// messages are readable from its output.
pub(crate) async fn connect<F, Fut>(first: ConsoleInput, open: F) -> Result<ConsoleStream, Status>
where
    F: FnOnce(tokio_stream::wrappers::ReceiverStream<ConsoleInput>) -> Fut,
    Fut: std::future::Future<Output = Result<Streaming<ConsoleOutput>, Status>>,
{
    let (tx, rx) = mpsc::channel(16);
    tx.send(first)
        .await
        .map_err(|_| Status::internal("console input closed before it opened"))?;
    let mut output = open(tokio_stream::wrappers::ReceiverStream::new(rx)).await?;
    let (user_in, mut pump_in) = tokio::io::duplex(64 * 1024);
    let (mut pump_out, user_out) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 8192];
        loop {
            match pump_in.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let message = ConsoleInput {
                        input: Some(console_input::Input::Data(buffer[..n].to_vec())),
                    };
                    if tx.send(message).await.is_err() {
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
