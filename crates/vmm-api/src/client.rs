//! A small blocking client, for tests, tools and the host daemon:
//! `Client::connect(path)?.call(Request::Status)`.

use std::io::{self, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::framing::{LineRead, LineReader};
use crate::{ApiError, Envelope, Reply, Request, Response, MAX_RESPONSE_LINE, PROTOCOL_VERSION};

/// Errors of the client side.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("Cannot connect to the VMM's control socket {path}")]
    Connect {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("Control socket I/O failed")]
    Io(#[source] io::Error),
    #[error("The VMM closed the control connection")]
    Closed,
    #[error("The VMM sent a malformed response: {0}")]
    BadResponse(String),
    #[error("The VMM refused the request")]
    Api(#[source] ApiError),
}

impl ClientError {
    /// The VMM's error answer, if that is what this is.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            ClientError::Api(e) => Some(e),
            _ => None,
        }
    }
}

/// One connection to a VMM's control socket.
pub struct Client {
    reader: LineReader<BufReader<UnixStream>>,
    writer: UnixStream,
    next_id: u64,
}

impl Client {
    /// Connects to the socket at `path`.
    pub fn connect(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.display().to_string(),
            source,
        })?;
        Client::from_stream(stream)
    }

    /// A client on a stream already connected to a control socket.
    pub fn from_stream(stream: UnixStream) -> Result<Client, ClientError> {
        let writer = stream.try_clone().map_err(ClientError::Io)?;
        Ok(Client {
            reader: LineReader::new(BufReader::new(stream), MAX_RESPONSE_LINE),
            writer,
            next_id: 1,
        })
    }

    /// The connection (for its peer's credentials, say).
    pub fn stream(&self) -> &UnixStream {
        &self.writer
    }

    /// Gives up on an answer after `timeout` (`None`: wait forever).
    pub fn set_timeout(&self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.writer
            .set_read_timeout(timeout)
            .and_then(|()| self.writer.set_write_timeout(timeout))
            .map_err(ClientError::Io)
    }

    /// Sends `request` and waits for its answer.
    pub fn call(&mut self, request: Request) -> Result<Reply, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let line = Envelope {
            id: Some(id),
            request,
        }
        .encode();
        let response = self.exchange(&line)?;
        let response: Response = serde_json::from_str(&response)
            .map_err(|e| ClientError::BadResponse(format!("{e}: {response}")))?;
        if response.v != PROTOCOL_VERSION {
            return Err(ClientError::BadResponse(format!(
                "protocol version {} (expected {PROTOCOL_VERSION})",
                response.v
            )));
        }
        if response.id != Some(id) {
            return Err(ClientError::BadResponse(format!(
                "answer to request {:?}, expected {id}",
                response.id
            )));
        }
        response.into_result().map_err(ClientError::Api)
    }

    /// Sends `line` as it is (a newline is added) and returns the response
    /// line unparsed: for debugging and for tests of bad input.
    pub fn call_raw(&mut self, line: &str) -> Result<String, ClientError> {
        let mut line = line.to_string();
        line.push('\n');
        self.exchange(&line)
    }

    fn exchange(&mut self, line: &str) -> Result<String, ClientError> {
        self.writer
            .write_all(line.as_bytes())
            .and_then(|()| self.writer.flush())
            .map_err(ClientError::Io)?;
        match self.reader.read_line().map_err(ClientError::Io)? {
            None => Err(ClientError::Closed),
            Some(LineRead::TooLong) => Err(ClientError::BadResponse(format!(
                "response longer than {MAX_RESPONSE_LINE} bytes"
            ))),
            Some(LineRead::Line(bytes)) => String::from_utf8(bytes)
                .map_err(|_| ClientError::BadResponse("response is not UTF-8".into())),
        }
    }
}
