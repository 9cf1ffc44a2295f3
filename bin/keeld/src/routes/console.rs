//! A VM's serial console over a WebSocket: binary messages both ways (text
//! messages are accepted as input too). A new viewer first gets the recent
//! output from the console log, then the live stream; any number of
//! viewers may watch and type at once.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use tokio::sync::broadcast::error::RecvError;

use crate::extract::{Auth, P};
use crate::{blocking, ApiResult, AppState};

/// The largest input message a viewer may send.
const MAX_INPUT: usize = 64 * 1024;

#[utoipa::path(get, path = "/api/v1/vms/{name}/console", tag = "vms",
    params(("name" = String, Path)),
    responses((status = 101, description = "WebSocket: the serial console"),
        (status = 409, body = hostd_api::ErrorBody)))]
pub async fn console(
    State(s): State<AppState>,
    Auth(caller): Auth,
    P(name): P<String>,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    let host = s.host.clone();
    let handle = blocking(move || host.vm_console(&caller, &name)).await?;
    Ok(ws
        .max_message_size(MAX_INPUT)
        .on_upgrade(move |socket| pump(socket, handle)))
}

async fn pump(mut socket: WebSocket, handle: hostd_core::ConsoleHandle) {
    let hostd_core::ConsoleHandle {
        backlog,
        mut output,
        input,
    } = handle;
    if !backlog.is_empty() && socket.send(Message::Binary(backlog.into())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            out = output.recv() => match out {
                Ok(bytes) => {
                    if socket.send(Message::Binary(bytes.to_vec().into())).await.is_err() {
                        return;
                    }
                }
                // A slow viewer missed some output; it keeps watching.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => {
                    let _ = socket
                        .send(Message::Close(Some(axum::extract::ws::CloseFrame {
                            code: 1000,
                            reason: "The VM stopped".into(),
                        })))
                        .await;
                    return;
                }
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    if input.send(b.to_vec()).is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Text(t))) => {
                    if input.send(t.as_bytes().to_vec()).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            },
        }
    }
}
