//! One HTTP/1.1 request over a fresh connection, with a deadline: what the lab's
//! clients (the link control, a site's fault hooks) and the drill engine share. A
//! refusal comes back with the server's JSON error text; a typed call
//! ([`JsonApi::get`], [`JsonApi::call`]) reads the answer into the contract's type
//! (`maildr-api-types` for the admin API), so no caller reads an answer by string key.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
pub use hyper::Method;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Longest one request may take, connect to last byte (unless the caller gives
/// its own deadline).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer body read.
pub const RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Why a request gave no successful answer; `api` names what was asked.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{api} at {addr}: {detail}")]
    Transport { api: &'static str, addr: SocketAddr, detail: String },
    #[error("{api} at {addr} answered {status}: {body}")]
    Refused { api: &'static str, addr: SocketAddr, status: u16, body: String },
}

/// A JSON API at one address, optionally behind a bearer token.
#[derive(Debug, Clone)]
pub struct JsonApi {
    /// What the API is, for error messages (`link control`, `admin API of bj`).
    pub api: &'static str,
    pub addr: SocketAddr,
    pub bearer: Option<String>,
}

impl JsonApi {
    /// `method path` with an optional JSON body; the body of a 2xx answer.
    pub async fn request(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Bytes, HttpError> {
        self.request_within(REQUEST_TIMEOUT, method, path, body).await
    }

    /// Like [`JsonApi::request`], within `timeout` (a switchover may take longer
    /// than the default; a watchdog wants a shorter one).
    pub async fn request_within(
        &self,
        timeout: Duration,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, HttpError> {
        let (api, addr) = (self.api, self.addr);
        let transport = |detail: String| HttpError::Transport { api, addr, detail };
        let work = async {
            let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| transport(e.to_string()))?;
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| transport(e.to_string()))?;
            let driver = tokio::spawn(connection);
            let mut request = Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, addr.to_string())
                .header(hyper::header::CONTENT_TYPE, "application/json");
            if let Some(token) = &self.bearer {
                request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
            }
            let request =
                request.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(|e| transport(e.to_string()))?;
            let response = sender.send_request(request).await.map_err(|e| transport(e.to_string()));
            let response = match response {
                Ok(r) => r,
                Err(e) => {
                    driver.abort();
                    return Err(e);
                }
            };
            let status = response.status();
            let limited = http_body_util::Limited::new(response.into_body(), RESPONSE_BYTES_MAX);
            let bytes = limited.collect().await.map_err(|e| transport(e.to_string()))?.to_bytes();
            driver.abort();
            if !status.is_success() {
                let body = String::from_utf8_lossy(&bytes).into_owned();
                return Err(HttpError::Refused { api, addr, status: status.as_u16(), body });
            }
            Ok(bytes)
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| transport(format!("no answer within {} ms", timeout.as_millis())))?
    }

    /// Like [`JsonApi::request`], with the answer parsed as JSON.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<serde_json::Value, HttpError> {
        self.json_within(REQUEST_TIMEOUT, method, path, body).await
    }

    /// Like [`JsonApi::json`], within `timeout`; an empty answer is JSON `null`.
    pub async fn json_within(
        &self,
        timeout: Duration,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<serde_json::Value, HttpError> {
        let bytes = self.request_within(timeout, method, path, body).await?;
        if bytes.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| HttpError::Transport {
            api: self.api,
            addr: self.addr,
            detail: format!("bad JSON: {e}"),
        })
    }

    /// `GET path`, the answer read as a `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, HttpError> {
        self.get_within(REQUEST_TIMEOUT, path).await
    }

    /// Like [`JsonApi::get`], within `timeout`.
    pub async fn get_within<T: DeserializeOwned>(&self, timeout: Duration, path: &str) -> Result<T, HttpError> {
        let bytes = self.request_within(timeout, Method::GET, path, None).await?;
        self.decode(&bytes)
    }

    /// `method path` with `body` as JSON, the answer read as a `Resp`.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &Req,
    ) -> Result<Resp, HttpError> {
        self.call_within(REQUEST_TIMEOUT, method, path, body).await
    }

    /// Like [`JsonApi::call`], within `timeout`.
    pub async fn call_within<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        timeout: Duration,
        method: Method,
        path: &str,
        body: &Req,
    ) -> Result<Resp, HttpError> {
        let body = serde_json::to_vec(body).map_err(|e| self.transport(format!("encoding the request: {e}")))?;
        let bytes = self.request_within(timeout, method, path, Some(body)).await?;
        self.decode(&bytes)
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, HttpError> {
        serde_json::from_slice(bytes).map_err(|e| self.transport(format!("answer not as the API describes it: {e}")))
    }

    fn transport(&self, detail: String) -> HttpError {
        HttpError::Transport { api: self.api, addr: self.addr, detail }
    }
}
