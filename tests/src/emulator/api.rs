//! Routing of the one API port to the Runtime, Extensions and Telemetry handlers.

use std::sync::Arc;

use http::{Method, StatusCode};
use serde_json::json;
use tokio::net::TcpListener;

use super::config::MAX_STREAMED_RESPONSE_BYTES;
use super::state::Shared;
use super::{extensions_api, runtime_api, telemetry};
use crate::http::{Request, Response, Server, json_response};

const RUNTIME_PREFIX: &str = "/2018-06-01/runtime/";
const EXTENSION_PREFIX: &str = "/2020-01-01/extension/";

pub(crate) fn serve(listener: TcpListener, shared: &Arc<Shared>) -> std::io::Result<Server> {
    let shared = Arc::clone(shared);
    // Buffered responses above their limit must still be read to be answered 413; streamed
    // ones may be far larger.
    let body_limit = MAX_STREAMED_RESPONSE_BYTES + 1;
    Server::start(
        listener,
        body_limit,
        Arc::new(move |req| Box::pin(route(Arc::clone(&shared), req))),
    )
}

async fn route(shared: Arc<Shared>, req: Request) -> Response {
    let method = req.method.clone();
    let path = req.path.clone();
    if let Some(rest) = path.strip_prefix(RUNTIME_PREFIX) {
        let parts: Vec<&str> = rest.split('/').collect();
        return match (&method, parts.as_slice()) {
            (&Method::GET, ["invocation", "next"]) => runtime_api::next(shared).await,
            (&Method::POST, ["invocation", id, "response"]) => {
                runtime_api::response(&shared, id, &req)
            }
            (&Method::POST, ["invocation", id, "error"]) => runtime_api::error(&shared, id, &req),
            (&Method::POST, ["init", "error"]) => runtime_api::init_error(&shared, &req),
            (&Method::GET, ["restore", "next"]) => runtime_api::restore_next(shared).await,
            (&Method::POST, ["restore", "error"]) => runtime_api::restore_error(&shared, &req),
            _ => not_found(&method, &path),
        };
    }
    if let Some(rest) = path.strip_prefix(EXTENSION_PREFIX) {
        return match (&method, rest) {
            (&Method::POST, "register") => extensions_api::register(&shared, &req),
            (&Method::GET, "event/next") => extensions_api::next(shared, &req).await,
            (&Method::POST, "init/error") => extensions_api::report_error(&shared, &req, "init"),
            (&Method::POST, "exit/error") => extensions_api::report_error(&shared, &req, "exit"),
            _ => not_found(&method, &path),
        };
    }
    match (&method, path.as_str()) {
        (&Method::PUT, "/2022-07-01/telemetry") => telemetry::subscribe(&shared, &req),
        // The Logs API is superseded by the Telemetry API; answer as AWS's emulator does.
        (&Method::PUT, "/2020-08-15/logs") => json_response(
            StatusCode::ACCEPTED,
            &json!({"errorMessage": "Logs API is not supported", "errorType": "Logs.NotSupported"}),
        ),
        _ => not_found(&method, &path),
    }
}

fn not_found(method: &Method, path: &str) -> Response {
    api_error(
        StatusCode::NOT_FOUND,
        "InvalidRequest",
        &format!("no route for {method} {path}"),
    )
}

/// The error body every Lambda API uses: `{"errorMessage","errorType"}`.
pub(crate) fn api_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    json_response(
        status,
        &json!({"errorMessage": message, "errorType": error_type}),
    )
}

/// `202 {"status":"OK"}`.
pub(crate) fn accepted() -> Response {
    json_response(StatusCode::ACCEPTED, &json!({"status": "OK"}))
}
