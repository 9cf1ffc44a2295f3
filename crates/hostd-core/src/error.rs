//! The one error type of the [`Host`](crate::Host) facade: a kind (which
//! keeld maps to an HTTP status) and a one-line message for a person.

use std::fmt;

/// What went wrong, as keeld maps it to a status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// 400: the request is malformed or names something invalid.
    BadRequest,
    /// 401: no valid session or password.
    Unauthorized,
    /// 403: the caller lacks a privilege (the message names it).
    Forbidden,
    /// 404
    NotFound,
    /// 409: the state does not allow it (VM on, name taken, operation in progress).
    Conflict,
    /// 413
    TooLarge,
    /// 429: too many failed logins.
    RateLimited,
    /// 507: the datastore has no room for it.
    InsufficientSpace,
    /// 500
    Internal,
}

impl ErrorKind {
    /// The wire code of `hostd_api::ErrorInfo`.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad-request",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not-found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::TooLarge => "too-large",
            ErrorKind::RateLimited => "rate-limited",
            ErrorKind::InsufficientSpace => "insufficient-space",
            ErrorKind::Internal => "internal",
        }
    }

    /// The inverse of [`ErrorKind::code`] (tasks store the code).
    pub fn from_code(code: &str) -> ErrorKind {
        match code {
            "bad-request" => ErrorKind::BadRequest,
            "unauthorized" => ErrorKind::Unauthorized,
            "forbidden" => ErrorKind::Forbidden,
            "not-found" => ErrorKind::NotFound,
            "conflict" => ErrorKind::Conflict,
            "too-large" => ErrorKind::TooLarge,
            "rate-limited" => ErrorKind::RateLimited,
            "insufficient-space" => ErrorKind::InsufficientSpace,
            _ => ErrorKind::Internal,
        }
    }
}

/// An error of the facade. `Display` is the message alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreError {
    pub kind: ErrorKind,
    pub message: String,
}

impl CoreError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> CoreError {
        CoreError {
            kind,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> CoreError {
        CoreError::new(ErrorKind::BadRequest, message)
    }
    pub fn not_found(message: impl Into<String>) -> CoreError {
        CoreError::new(ErrorKind::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> CoreError {
        CoreError::new(ErrorKind::Conflict, message)
    }
    pub fn forbidden(message: impl Into<String>) -> CoreError {
        CoreError::new(ErrorKind::Forbidden, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> CoreError {
        CoreError::new(ErrorKind::Unauthorized, message)
    }
    pub fn internal(message: impl Into<String>) -> CoreError {
        CoreError::new(ErrorKind::Internal, message)
    }

    /// The same kind with another message.
    pub fn with_message(mut self, message: impl Into<String>) -> CoreError {
        self.message = message.into();
        self
    }

    /// The same error, its message prefixed (`"Kernel: " + message`).
    pub fn context(mut self, prefix: impl fmt::Display) -> CoreError {
        self.message = format!("{prefix}: {}", self.message);
        self
    }

    /// The wire form (`{"code", "message"}`).
    pub fn info(&self) -> hostd_api::ErrorInfo {
        hostd_api::ErrorInfo {
            code: self.kind.code().to_string(),
            message: self.message.clone(),
        }
    }

    /// An I/O error on `what` (a path or a description): ENOSPC and EDQUOT
    /// become [`ErrorKind::InsufficientSpace`], NotFound stays NotFound,
    /// the rest is internal.
    pub fn io(what: impl fmt::Display, err: &std::io::Error) -> CoreError {
        let kind = match err.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => ErrorKind::InsufficientSpace,
            _ if err.kind() == std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            _ => ErrorKind::Internal,
        };
        CoreError::new(kind, format!("{what}: {err}"))
    }
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CoreError {}

/// The facade's result.
pub type Result<T> = std::result::Result<T, CoreError>;

impl From<rusqlite::Error> for CoreError {
    fn from(err: rusqlite::Error) -> CoreError {
        CoreError::internal(format!("Inventory database: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_display_is_the_message() {
        for kind in [
            ErrorKind::BadRequest,
            ErrorKind::Unauthorized,
            ErrorKind::Forbidden,
            ErrorKind::NotFound,
            ErrorKind::Conflict,
            ErrorKind::TooLarge,
            ErrorKind::RateLimited,
            ErrorKind::InsufficientSpace,
            ErrorKind::Internal,
        ] {
            assert_eq!(ErrorKind::from_code(kind.code()), kind);
        }
        let e = CoreError::conflict("VM web1 is powered on");
        assert_eq!(e.to_string(), "VM web1 is powered on");
        assert_eq!(e.info().code, "conflict");
    }

    #[test]
    fn io_errors_map_no_space_and_not_found() {
        let nospc = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(
            CoreError::io("Writing x", &nospc).kind,
            ErrorKind::InsufficientSpace
        );
        let nf = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(CoreError::io("Opening x", &nf).kind, ErrorKind::NotFound);
        let other = std::io::Error::from_raw_os_error(libc::EIO);
        let e = CoreError::io("Reading x", &other);
        assert_eq!(e.kind, ErrorKind::Internal);
        assert!(e.message.starts_with("Reading x: "));
    }
}
