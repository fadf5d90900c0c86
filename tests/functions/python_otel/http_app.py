"""A Python function traced with the plain OpenTelemetry SDK and its default OTLP/HTTP exporter
(`opentelemetry-exporter-otlp-proto-http`, protobuf), run by AWS's runtime interface client.

The exporter sends to OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces (the extension's receiver); the
event chooses gzip compression or none. The spans are those of `handler_spans`, each child
padded with the event's `padding` bytes. Spans are flushed before the handler returns; the
response carries every span id made.
"""

from handler_spans import make_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


def provider(compression):
    p = TracerProvider(resource=Resource.create({"service.name": "orders-otlp-http"}))
    p.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(compression=compression)))
    return p


PROVIDERS = {"none": provider(Compression.NoCompression), "gzip": provider(Compression.Gzip)}


def handler(event, context):
    p = PROVIDERS[event.get("compression", "none")]
    tracer = p.get_tracer("orders.http", "1.0")
    ids, _ = make_spans(tracer, event, padded=True)
    flushed = p.force_flush()
    return {"span_ids": ids, "handler_span_id": ids[0], "flushed": flushed}
