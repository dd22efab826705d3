//! A JSON-over-HTTP/1.1 client for the admin API (bearer token) and the lab's
//! link control: one request per fresh connection, under a deadline.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

/// Largest response body read.
const RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("{addr}{path}: {detail}")]
    Transport { addr: SocketAddr, path: String, detail: String },
    #[error("{addr}{path} answered {status}: {body}")]
    Status { addr: SocketAddr, path: String, status: u16, body: String },
}

/// A client of one HTTP endpoint.
#[derive(Debug, Clone)]
pub struct JsonClient {
    pub addr: SocketAddr,
    token: Option<String>,
    timeout: Duration,
}

impl JsonClient {
    pub fn new(addr: SocketAddr, token: Option<String>, timeout: Duration) -> JsonClient {
        JsonClient { addr, token, timeout }
    }

    pub async fn get(&self, path: &str) -> Result<serde_json::Value, HttpError> {
        self.request(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value, HttpError> {
        self.request(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value, HttpError> {
        self.request(Method::PUT, path, Some(body)).await
    }

    /// Like `post` with a longer deadline (switchover and verify may take a while).
    pub async fn post_slow(
        &self,
        path: &str,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> Result<serde_json::Value, HttpError> {
        JsonClient { timeout, ..self.clone() }.request(Method::POST, path, Some(body)).await
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, HttpError> {
        let addr = self.addr;
        let transport = |detail: String| HttpError::Transport { addr, path: path.to_string(), detail };
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
            if let Some(token) = &self.token {
                request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
            }
            let payload = body.map(|b| serde_json::to_vec(b).expect("a JSON value serialises")).unwrap_or_default();
            let request = request.body(Full::new(Bytes::from(payload))).map_err(|e| transport(e.to_string()))?;
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
                return Err(HttpError::Status {
                    addr,
                    path: path.to_string(),
                    status: status.as_u16(),
                    body: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
                });
            }
            if bytes.is_empty() {
                return Ok(serde_json::Value::Null);
            }
            serde_json::from_slice(&bytes).map_err(|e| transport(format!("not JSON: {e}")))
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| transport(format!("no answer within {} ms", self.timeout.as_millis())))?
    }
}
