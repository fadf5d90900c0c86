"""A Python function traced with AWS's OpenTelemetry SDK (aws-opentelemetry-distro), run by AWS's
runtime interface client through the layer's wrapper script.

Spans are exported as ADOT does in Lambda: `OTLPUdpSpanExporter` to AWS_XRAY_DAEMON_ADDRESS, a
batch span processor of 10 spans, flushed before the handler returns. The spans are those of
`handler_spans`. The event chooses the sampled (`T1S`) or unsampled (`T1U`) exporter and how
many child spans to make. The response carries
every span id made and every datagram body sent, exactly as sent, so the test can compare them
with what reached X-Ray.
"""

import os

from amazon.opentelemetry.distro.otlp_udp_exporter import OTLPUdpSpanExporter
from handler_spans import make_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

SENT = []


class RecordingSocket:
    """The exporter's socket, recording each datagram it sends."""

    def __init__(self, sock):
        self._sock = sock

    def sendto(self, data, address):
        SENT.append(data)
        return self._sock.sendto(data, address)

    def close(self):
        self._sock.close()


def provider(sampled):
    exporter = OTLPUdpSpanExporter(endpoint=os.environ["AWS_XRAY_DAEMON_ADDRESS"], sampled=sampled)
    exporter._udp_exporter._socket = RecordingSocket(exporter._udp_exporter._socket)
    p = TracerProvider(resource=Resource.create({"service.name": "orders-otel"}))
    p.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=10))
    return p


PROVIDERS = {True: provider(True), False: provider(False)}


def handler(event, context):
    SENT.clear()
    sampled = not event.get("unsampled", False)
    p = PROVIDERS[sampled]
    tracer = p.get_tracer("orders.handler", "1.0")
    ids, trace_id = make_spans(tracer, event)
    p.force_flush()
    bodies = [d.split(b"\n", 1)[1].decode("ascii") for d in SENT]
    if event.get("error"):
        raise ValueError("the event asked for an error")
    return {
        "span_ids": ids,
        "handler_span_id": ids[0],
        "trace_id": trace_id,
        "bodies": bodies,
        "daemon_address": os.environ.get("AWS_XRAY_DAEMON_ADDRESS"),
        "next_wrapper_saw": os.environ.get("NEXT_WRAPPER_SAW_DAEMON_ADDRESS"),
        "otel_variables": sorted(k for k in os.environ if k.startswith("OTEL_")),
    }
