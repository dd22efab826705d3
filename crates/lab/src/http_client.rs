//! One HTTP/1.1 request over a fresh connection, with a deadline: what the lab's
//! clients (the link control, a site's fault hooks) share. A refusal comes back
//! with the server's JSON error text.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

/// Longest one request may take, connect to last byte.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

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
        let (api, addr) = (self.api, self.addr);
        let transport = |detail: String| HttpError::Transport { api, addr, detail };
        let work = async {
            let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| transport(e.to_string()))?;
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| transport(e.to_string()))?;
            tokio::spawn(connection);
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
            let response = sender.send_request(request).await.map_err(|e| transport(e.to_string()))?;
            let status = response.status();
            let bytes = response.into_body().collect().await.map_err(|e| transport(e.to_string()))?.to_bytes();
            if !status.is_success() {
                let body = String::from_utf8_lossy(&bytes).into_owned();
                return Err(HttpError::Refused { api, addr, status: status.as_u16(), body });
            }
            Ok(bytes)
        };
        tokio::time::timeout(REQUEST_TIMEOUT, work).await.map_err(|_| transport("no answer in time".into()))?
    }

    /// Like [`JsonApi::request`], with the answer parsed as JSON.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<serde_json::Value, HttpError> {
        let bytes = self.request(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| HttpError::Transport {
            api: self.api,
            addr: self.addr,
            detail: format!("bad JSON: {e}"),
        })
    }
}
