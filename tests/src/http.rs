//! A minimal HTTP/1.1 server and client on hyper, shared by the emulator, the sink and tests.
//!
//! The server takes an already bound listener (bind first, so a port clash is the caller's error,
//! not a panic in a task), reads each request body whole under a size limit, and hands a
//! [`Request`] to an async handler. Dropping the [`Server`] stops accepting and closes every open
//! connection, including long-polls in progress.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// The response type handlers return.
pub type Response = hyper::Response<Full<Bytes>>;

/// A boxed handler future.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Response> + Send>>;

/// An async request handler.
pub type Handler = Arc<dyn Fn(Request) -> HandlerFuture + Send + Sync>;

/// A request with its body read whole.
#[derive(Debug)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The path, without the query.
    pub path: String,
    /// The query string, when present.
    pub query: Option<String>,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
    /// When the request head arrived.
    pub received_at: Instant,
    /// When the last byte of the body had been read.
    pub body_done_at: Instant,
}

impl Request {
    /// A header as text, when present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Errors of the HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The TCP connection could not be made.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The exchange did not finish in time.
    #[error("no response from {addr} within {timeout:?}")]
    Timeout {
        /// The address.
        addr: SocketAddr,
        /// The limit that passed.
        timeout: Duration,
    },
    /// The HTTP exchange failed.
    #[error("HTTP exchange with {addr}: {source}")]
    Protocol {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: hyper::Error,
    },
    /// The request could not be built.
    #[error("invalid request: {0}")]
    Build(#[from] http::Error),
}

/// A running server; dropping it stops it.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    /// Serves `listener` with `handler`; bodies over `body_limit` bytes get 413.
    pub fn start(
        listener: TcpListener,
        body_limit: usize,
        handler: Handler,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let task = tokio::spawn(accept_loop(listener, body_limit, handler));
        Ok(Self { addr, task })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection task.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, body_limit: usize, handler: Handler) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let handler = Arc::clone(&handler);
                    connections.spawn(serve_connection(stream, body_limit, handler));
                }
                Err(error) => {
                    // Transient (e.g. EMFILE): back off briefly rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream, body_limit: usize, handler: Handler) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req: hyper::Request<Incoming>| {
        let handler = Arc::clone(&handler);
        async move {
            let response = dispatch(req, body_limit, handler).await;
            if response.extensions().get::<Disconnect>().is_some() {
                // An error from the service makes hyper drop the connection unanswered.
                return Err(Disconnect);
            }
            Ok(response)
        }
    });
    if let Err(error) = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(%error, "connection closed with an error");
    }
}

async fn dispatch(req: hyper::Request<Incoming>, body_limit: usize, handler: Handler) -> Response {
    let received_at = Instant::now();
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, body_limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            return json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &serde_json::json!({
                    "errorMessage": format!("request body rejected: {error}"),
                    "errorType": "RequestEntityTooLarge",
                }),
            );
        }
    };
    let request = Request {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body,
        received_at,
        body_done_at: Instant::now(),
    };
    handler(request).await
}

/// A response with `body` serialized as JSON.
pub fn json_response<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    bytes_response(status, "application/json", bytes)
}

/// A response with a body of the given content type.
pub fn bytes_response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response {
    let mut response = hyper::Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Marks a response that must not be sent: the connection is closed instead.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("connection closed without a response")]
pub struct Disconnect;

/// A "response" that makes the server close the connection without answering.
pub fn disconnect_response() -> Response {
    let mut response = empty_response(StatusCode::INTERNAL_SERVER_ERROR);
    response.extensions_mut().insert(Disconnect);
    response
}

/// A response with no body.
pub fn empty_response(status: StatusCode) -> Response {
    let mut response = hyper::Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// A response read whole by the client.
#[derive(Debug, Clone)]
pub struct ClientResponse {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl ClientResponse {
    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Starts a request to `path` on `addr`; finish it with `.body(...)` and pass it to [`send`].
pub fn request(method: Method, addr: SocketAddr, path: &str) -> http::request::Builder {
    http::Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, addr.to_string())
}

/// Sends `req` to `addr` on a new connection and reads the whole response, all within `timeout`
/// when given (long-polls pass `None`).
pub async fn send(
    addr: SocketAddr,
    req: http::Request<Full<Bytes>>,
    timeout: Option<Duration>,
) -> Result<ClientResponse, HttpError> {
    let exchange = exchange(addr, req);
    match timeout {
        Some(limit) => {
            tokio::time::timeout(limit, exchange)
                .await
                .map_err(|_| HttpError::Timeout {
                    addr,
                    timeout: limit,
                })?
        }
        None => exchange.await,
    }
}

async fn exchange(
    addr: SocketAddr,
    req: http::Request<Full<Bytes>>,
) -> Result<ClientResponse, HttpError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| HttpError::Connect { addr, source })?;
    let _ = stream.set_nodelay(true);
    let protocol = |source| HttpError::Protocol { addr, source };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(protocol)?;
    let driver = tokio::spawn(connection);
    let result = async {
        let response = sender.send_request(req).await.map_err(protocol)?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(protocol)?.to_bytes();
        Ok(ClientResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
    .await;
    driver.abort();
    result
}

/// A `Full` body from anything byte-like.
pub fn body(bytes: impl Into<Bytes>) -> Full<Bytes> {
    Full::new(bytes.into())
}
