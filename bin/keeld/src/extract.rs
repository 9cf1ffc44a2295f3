//! Request extractors: JSON bodies, queries and paths whose rejections are
//! [`ApiError`]s, and the authenticated caller.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;
use hostd_core::Caller;

use crate::error::ApiError;
use crate::AppState;

/// A JSON body; malformed ones get `400 bad-request` naming the problem.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct JsonBody<T>(pub T);

/// A query string, with [`ApiError`] rejections.
#[derive(FromRequestParts)]
#[from_request(via(Query), rejection(ApiError))]
pub struct Q<T>(pub T);

/// Path parameters, with [`ApiError`] rejections.
#[derive(FromRequestParts)]
#[from_request(via(Path), rejection(ApiError))]
pub struct P<T>(pub T);

/// The caller, authenticated by `Authorization: Bearer TOKEN` (a session
/// from `POST /api/v1/session`), `Authorization: Basic` (for scripts), or
/// an `access_token` query parameter (for WebSockets, which browsers open
/// without headers).
pub struct Auth(pub Caller);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let peer = peer_ip(parts);
        let credentials = credentials(parts)?;
        let host = state.host.clone();
        let caller = crate::blocking(move || match credentials {
            Credentials::Token(t) => host.authenticate(&t),
            Credentials::Basic(user, password) => {
                host.authenticate_password(&user, &password, peer)
            }
        })
        .await?;
        Ok(Auth(caller))
    }
}

enum Credentials {
    Token(String),
    Basic(String, String),
}

fn credentials(parts: &Parts) -> Result<Credentials, ApiError> {
    if let Some(value) = parts.headers.get(AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| ApiError::unauthorized("The Authorization header is not text"))?;
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return Ok(Credentials::Token(rest.to_string()));
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let bad = || {
                ApiError::unauthorized(
                    "Malformed Basic credentials: expected base64 of USER:PASSWORD",
                )
            };
            let raw = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .map_err(|_| bad())?;
            let text = String::from_utf8(raw).map_err(|_| bad())?;
            let (user, password) = text.split_once(':').ok_or_else(bad)?;
            return Ok(Credentials::Basic(user.to_string(), password.to_string()));
        }
        return Err(ApiError::unauthorized(format!(
            "Unknown authorization scheme '{scheme}': use Bearer TOKEN or Basic"
        )));
    }
    if let Some(query) = parts.uri.query() {
        for pair in query.split('&') {
            if let Some(token) = pair.strip_prefix("access_token=") {
                return Ok(Credentials::Token(token.to_string()));
            }
        }
    }
    Err(ApiError::unauthorized(
        "Log in first: POST /api/v1/session, then send Authorization: Bearer TOKEN",
    ))
}

/// The peer's address (for rate limiting failed logins); unspecified when
/// the router runs without connection info (tests).
pub fn peer_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// The peer's IP address ([`peer_ip`]) as an extractor.
pub struct PeerIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for PeerIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(PeerIp(peer_ip(parts)))
    }
}
