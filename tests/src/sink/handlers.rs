//! The sink's requests, one by one: the operation from the path, faults from the plan, then
//! `PutTraceSegments`' documents or `/v1/traces`' spans checked against the service's limits,
//! recorded and answered as the service answers.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{HeaderValue, StatusCode};
use serde_json::{Value, json};

use crate::http::{Request, Response, disconnect_response, json_response};
use crate::trace::new_uuid;

use super::fault;
use super::traces;
use super::{
    Fault, MAX_DOCUMENTS_PER_CALL, Operation, ReceivedDocument, ReceivedSpan, Rejection, SinkCall,
    SinkShared, SubmittedDocument, check_document, decode_document, is_otlp,
};

/// The access key id of a `SigV4` `Authorization` header:
/// `AWS4-HMAC-SHA256 Credential=<id>/<date>/<region>/xray/aws4_request, ...`.
fn signing_key_id(authorization: &str) -> Option<String> {
    let credential = authorization.split("Credential=").nth(1)?;
    let id = credential.split('/').next()?;
    (!id.is_empty()).then(|| id.to_owned())
}

pub(super) async fn handle(shared: Arc<SinkShared>, req: Request) -> Response {
    let operation = Operation::of(&req.method, &req.path);
    let signed = req.headers.contains_key(http::header::AUTHORIZATION);
    let access_key_id = req
        .header(http::header::AUTHORIZATION.as_str())
        .and_then(signing_key_id);
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let mut call = SinkCall {
        operation,
        put_index: None,
        at: req.body_done_at,
        body,
        documents: Vec::new(),
        status: 200,
        response: json!({}),
        fault: None,
        signed,
        access_key_id,
        traces: None,
    };
    let (status, error_type) = match operation {
        Operation::PutTraceSegments => {
            return put_trace_segments(&shared, call).await;
        }
        Operation::OtlpTraces => return otlp_traces(&shared, call, &req).await,
        Operation::PutTelemetryRecords => (StatusCode::OK, None),
        Operation::GetSamplingRules => {
            call.response = json!({"SamplingRuleRecords": []});
            (StatusCode::OK, None)
        }
        Operation::GetSamplingTargets => {
            call.response = json!({
                "SamplingTargetDocuments": [],
                "LastRuleModification": 0,
                "UnprocessedStatistics": [],
            });
            (StatusCode::OK, None)
        }
        Operation::Unknown => {
            call.response =
                json!({"message": format!("no operation at {} {}", req.method, req.path)});
            (StatusCode::NOT_FOUND, Some("UnknownOperationException"))
        }
    };
    call.status = status.as_u16();
    let response = aws_response(status, error_type, &call.response);
    record(&shared, call, Vec::new(), Vec::new());
    response
}

/// Numbers a `PutTraceSegments` or `/v1/traces` call (the index a [`FaultPlan`] is keyed by).
fn next_put_index(shared: &SinkShared) -> usize {
    let mut records = shared.records();
    let index = records.put_calls;
    records.put_calls += 1;
    index
}

/// `/v1/traces`: faults as for `PutTraceSegments`, then the checks of [`traces::check`]; the
/// answer is an empty `ExportTraceServiceResponse`.
async fn otlp_traces(shared: &SinkShared, mut call: SinkCall, req: &Request) -> Response {
    let index = next_put_index(shared);
    call.put_index = Some(index);
    let traces_fault = shared.traces_plan().as_ref().map(|p| p.fault_for(index));
    call.fault = traces_fault.unwrap_or_else(|| shared.plan().fault_for(index));
    if let Some(response) = apply_fault(shared, &mut call).await {
        return response;
    }
    match traces::check(req, req.header("host").unwrap_or_default()) {
        Ok((checked, spans)) => {
            call.traces = Some(checked);
            call.response = Value::Null;
            let response =
                crate::http::bytes_response(StatusCode::OK, "application/x-protobuf", Vec::new());
            record(shared, call, Vec::new(), spans);
            response
        }
        Err(refusal) => {
            call.status = refusal.status;
            call.response = json!({"message": refusal.message});
            let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST);
            let response = aws_response(status, Some(refusal.error_type), &call.response);
            record(shared, call, Vec::new(), Vec::new());
            response
        }
    }
}

async fn put_trace_segments(shared: &SinkShared, mut call: SinkCall) -> Response {
    let index = next_put_index(shared);
    call.put_index = Some(index);
    let fault = shared.plan().fault_for(index);
    call.fault.clone_from(&fault);
    if let Some(response) = apply_fault(shared, &mut call).await {
        return response;
    }
    let Some(raw_documents) = call
        .body
        .get("TraceSegmentDocuments")
        .and_then(Value::as_array)
        .and_then(|docs| {
            docs.iter()
                .map(|d| d.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
        })
    else {
        return refuse(
            shared,
            call,
            "TraceSegmentDocuments must be a list of strings",
        );
    };
    if raw_documents.len() > MAX_DOCUMENTS_PER_CALL {
        call.documents = raw_documents
            .into_iter()
            .map(|raw| SubmittedDocument {
                value: serde_json::from_str(&raw).ok(),
                raw,
                rejection: None,
            })
            .collect();
        let message = format!("Exceeding maximum segment count: {MAX_DOCUMENTS_PER_CALL}");
        return refuse(shared, call, &message);
    }
    let unprocessed_fraction = match fault {
        Some(Fault::PartialUnprocessed(fraction)) => Some(fraction),
        _ => None,
    };
    let Checked {
        submitted,
        stored,
        spans,
        unprocessed,
    } = check_documents(raw_documents, unprocessed_fraction, call.at, index);
    call.documents = submitted;
    call.response = json!({"UnprocessedTraceSegments": unprocessed});
    let response = aws_response(StatusCode::OK, None, &call.response);
    record(shared, call, stored, spans);
    response
}

/// Applies the call's fault; `Some` is the answer when the fault replaces processing.
async fn apply_fault(shared: &SinkShared, call: &mut SinkCall) -> Option<Response> {
    let (status, error_type) = match call.fault.clone()? {
        Fault::Delay(pause) => {
            tokio::time::sleep(pause).await;
            return None;
        }
        Fault::PartialUnprocessed(_) => return None,
        Fault::Throttle => (
            StatusCode::TOO_MANY_REQUESTS,
            "ThrottledException".to_owned(),
        ),
        Fault::ServerError => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure".to_owned(),
        ),
        Fault::Status { status, error_type } => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            error_type,
        ),
        Fault::Disconnect => {
            call.status = 0;
            call.response = Value::Null;
            record(shared, call.clone(), Vec::new(), Vec::new());
            return Some(disconnect_response());
        }
    };
    call.status = status.as_u16();
    call.response = json!({"message": format!("injected {error_type}")});
    let response = aws_response(status, Some(&error_type), &call.response);
    record(shared, call.clone(), Vec::new(), Vec::new());
    Some(response)
}

/// Answers 400 `InvalidRequestException` and records the call.
fn refuse(shared: &SinkShared, mut call: SinkCall, message: &str) -> Response {
    call.status = 400;
    call.response = json!({"message": message});
    let response = aws_response(
        StatusCode::BAD_REQUEST,
        Some("InvalidRequestException"),
        &call.response,
    );
    record(shared, call, Vec::new(), Vec::new());
    response
}

/// What one `PutTraceSegments` call's documents came to.
#[derive(Default)]
struct Checked {
    /// Every document as submitted.
    submitted: Vec<SubmittedDocument>,
    /// The JSON documents stored.
    stored: Vec<ReceivedDocument>,
    /// The spans of the OTLP documents stored.
    spans: Vec<ReceivedSpan>,
    /// The `UnprocessedTraceSegments` entries.
    unprocessed: Vec<Value>,
}

/// Checks each document (the injected unprocessed fraction applies to JSON documents only).
fn check_documents(
    raw_documents: Vec<String>,
    unprocessed_fraction: Option<f64>,
    at: Instant,
    put_index: usize,
) -> Checked {
    let now = SystemTime::now();
    let mut out = Checked::default();
    let Checked {
        submitted,
        stored,
        spans,
        unprocessed,
    } = &mut out;
    let mut valid_seen = 0;
    for raw in raw_documents {
        if is_otlp(&raw) {
            let rejection = match decode_document(&raw, now) {
                Ok(decoded) => {
                    spans.extend(decoded);
                    None
                }
                Err(r) => {
                    unprocessed.push(json!({
                        "Id": "",
                        "ErrorCode": r.error_code,
                        "Message": r.message,
                    }));
                    Some(r)
                }
            };
            submitted.push(SubmittedDocument {
                raw,
                value: None,
                rejection,
            });
            continue;
        }
        let value: Option<Value> = serde_json::from_str(&raw).ok();
        let mut rejection = check_document(&raw, now).err();
        if rejection.is_none() {
            if let Some(fraction) = unprocessed_fraction
                && fault::is_marked_unprocessed(valid_seen, fraction)
            {
                rejection = Some(Rejection {
                    id: value
                        .as_ref()
                        .and_then(|v| v.get("id"))
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    error_code: "ThrottledException",
                    message: "injected: rate exceeded".to_owned(),
                });
            }
            valid_seen += 1;
        }
        match (&rejection, &value) {
            (Some(r), _) => unprocessed.push(json!({
                "Id": r.id.clone().unwrap_or_default(),
                "ErrorCode": r.error_code,
                "Message": r.message,
            })),
            (None, Some(v)) => stored.push(ReceivedDocument {
                id: v.get("id").and_then(Value::as_str).unwrap_or("").to_owned(),
                trace_id: v
                    .get("trace_id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                raw: raw.clone(),
                value: v.clone(),
                at,
                put_index,
            }),
            (None, None) => {}
        }
        submitted.push(SubmittedDocument {
            raw,
            value,
            rejection,
        });
    }
    out
}

fn record(
    shared: &SinkShared,
    call: SinkCall,
    stored: Vec<ReceivedDocument>,
    spans: Vec<ReceivedSpan>,
) {
    {
        let mut records = shared.records();
        records.calls.push(call);
        records.stored.extend(stored);
        records.spans.extend(spans);
    }
    shared.changed.send_modify(|v| *v += 1);
}

/// A restJson1 response: errors carry their type in `x-amzn-ErrorType`.
fn aws_response(status: StatusCode, error_type: Option<&str>, body: &Value) -> Response {
    let mut response = json_response(status, body);
    let headers = response.headers_mut();
    if let Ok(request_id) = HeaderValue::from_str(&new_uuid()) {
        headers.insert("x-amzn-RequestId", request_id);
    }
    if let Some(error_type) = error_type.and_then(|t| HeaderValue::from_str(t).ok()) {
        headers.insert("x-amzn-ErrorType", error_type);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::signing_key_id;

    #[test]
    fn the_signing_key_id_is_read_from_the_credential_scope() {
        let header = "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/20261130/us-east-1/xray/aws4_request, SignedHeaders=host, Signature=ab";
        assert_eq!(signing_key_id(header).as_deref(), Some("ASIAEXAMPLE"));
        assert_eq!(signing_key_id("Bearer x"), None);
        assert_eq!(signing_key_id("AWS4-HMAC-SHA256 Credential=/x"), None);
    }
}
