//! A VM's serial console over keeld's WebSocket (tungstenite over rustls,
//! with the same certificate trust as the REST calls).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::WebSocket;
use tungstenite::Message;

use crate::tls::{client_config, Trust};
use crate::ClientError;

trait Stream: Read + Write + Send {
    fn tcp(&self) -> &TcpStream;
}

impl Stream for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Stream for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }
}

/// An open console: bytes from the VM's serial port, bytes to it.
pub struct Console {
    ws: WebSocket<Box<dyn Stream>>,
}

impl Console {
    pub(crate) fn connect(
        host: &str,
        port: u16,
        https: bool,
        trust: &Trust,
        path: &str,
        authorization: &str,
    ) -> Result<Self, ClientError> {
        let tcp = TcpStream::connect((host, port))
            .map_err(|e| ClientError::Transport(format!("Cannot connect to {host}:{port}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = if https {
            let name = ServerName::try_from(host.to_string())
                .map_err(|_| ClientError::Tls(format!("'{host}' is not a valid host name")))?;
            let conn = rustls::ClientConnection::new(client_config(trust)?, name)
                .map_err(|e| ClientError::Tls(e.to_string()))?;
            Box::new(rustls::StreamOwned::new(conn, tcp))
        } else {
            Box::new(tcp)
        };
        let scheme = if https { "wss" } else { "ws" };
        let host_part = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let mut request = format!("{scheme}://{host_part}:{port}{path}")
            .into_client_request()
            .map_err(|e| ClientError::Usage(e.to_string()))?;
        let value = authorization
            .parse()
            .map_err(|_| ClientError::Usage("The credentials are not a valid header".into()))?;
        request.headers_mut().insert("Authorization", value);
        let (ws, _) = tungstenite::client::client(request, stream).map_err(|e| match e {
            tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp)) => {
                let status = resp.status().as_u16();
                let body = resp
                    .body()
                    .as_deref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                match serde_json::from_str::<hostd_api::ErrorBody>(&body) {
                    Ok(e) => ClientError::Api {
                        status,
                        code: e.error.code,
                        message: e.error.message,
                    },
                    Err(_) => ClientError::Api {
                        status,
                        code: "http".into(),
                        message: format!("The console was refused ({status})"),
                    },
                }
            }
            other => ClientError::Transport(format!("Cannot open the console: {other}")),
        })?;
        Ok(Self { ws })
    }

    /// Sends bytes to the VM's serial port.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.ws
            .send(Message::Binary(bytes.to_vec().into()))
            .map_err(|e| ClientError::Transport(format!("The console broke off: {e}")))
    }

    /// The next output, waiting at most `timeout`: `Ok(None)` when nothing
    /// came, an error when the console closed (the VM stopped).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>, ClientError> {
        let _ = self
            .ws
            .get_ref()
            .tcp()
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))));
        loop {
            match self.ws.read() {
                Ok(Message::Binary(b)) => return Ok(Some(b.to_vec())),
                Ok(Message::Text(t)) => return Ok(Some(t.as_bytes().to_vec())),
                Ok(Message::Close(frame)) => {
                    let why = frame
                        .map(|f| f.reason.to_string())
                        .filter(|r| !r.is_empty())
                        .unwrap_or_else(|| "The console closed".into());
                    return Err(ClientError::Transport(why));
                }
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) => {
                    return Err(ClientError::Transport(format!(
                        "The console broke off: {e}"
                    )))
                }
            }
        }
    }

    /// Reads output until `needle` appeared or `timeout` passed; returns
    /// everything read (for tests and scripts).
    pub fn read_until(&mut self, needle: &str, timeout: Duration) -> Result<String, ClientError> {
        let end = std::time::Instant::now() + timeout;
        let mut seen = Vec::new();
        while std::time::Instant::now() < end {
            if let Some(b) = self.recv_timeout(Duration::from_millis(100))? {
                seen.extend_from_slice(&b);
                if String::from_utf8_lossy(&seen).contains(needle) {
                    break;
                }
            }
        }
        Ok(String::from_utf8_lossy(&seen).into_owned())
    }

    pub fn close(mut self) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
    }
}
