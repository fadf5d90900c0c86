"""A Python function traced with the plain OpenTelemetry SDK and its default OTLP/HTTP exporter
(`opentelemetry-exporter-otlp-proto-http`, protobuf), run by AWS's runtime interface client.

The exporter sends to OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces (the extension's receiver); the
event chooses gzip compression or none. The handler span's parent is Lambda's `Parent` from
_X_AMZN_TRACE_ID (the X-Ray propagator), so the spans join the invocation's trace. Spans are
flushed before the handler returns; the response carries every span id made.
"""

import os

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.propagators.aws import AwsXRayPropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


def provider(compression):
    p = TracerProvider(resource=Resource.create({"service.name": "orders-otlp-http"}))
    p.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(compression=compression)))
    return p


PROVIDERS = {"none": provider(Compression.NoCompression), "gzip": provider(Compression.Gzip)}


def span_id(span):
    return format(span.get_span_context().span_id, "016x")


def handler(event, context):
    p = PROVIDERS[event.get("compression", "none")]
    tracer = p.get_tracer("orders.http", "1.0")
    parent = AwsXRayPropagator().extract({"X-Amzn-Trace-Id": os.environ.get("_X_AMZN_TRACE_ID", "")})
    ids = []
    with tracer.start_as_current_span("handler", context=parent, kind=trace.SpanKind.SERVER) as h:
        ids.append(span_id(h))
        for i in range(int(event.get("children", 2))):
            with tracer.start_as_current_span("step-%d" % i) as s:
                s.set_attribute("step", i)
                s.set_attribute("padding", "x" * int(event.get("padding", 0)))
                ids.append(span_id(s))
    flushed = p.force_flush()
    return {"span_ids": ids, "handler_span_id": ids[0], "flushed": flushed}
