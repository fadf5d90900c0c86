"""The spans both OpenTelemetry test functions make in their handler: a SERVER span whose parent
is Lambda's `Parent` from _X_AMZN_TRACE_ID (the X-Ray propagator), so the spans join the
invocation's trace, and the event's `children` child spans under it (2 unless asked)."""

import os
import string

from opentelemetry import trace
from opentelemetry.propagators.aws import AwsXRayPropagator


def span_id(span):
    return format(span.get_span_context().span_id, "016x")


def padding_text(n):
    """n characters of the ASCII letters, repeated (the tests rebuild the same text)."""
    return (string.ascii_letters * (n // len(string.ascii_letters) + 1))[:n]


def make_spans(tracer, event, padded=False):
    """Makes the spans; with `padded`, each child carries a `padding` attribute: for the i-th
    child with an i-th entry in the event's `paddings`, that many characters of `padding_text`,
    else the event's `padding` bytes (none unless asked). Returns the span ids, the handler's
    first, and the trace id."""
    parent = AwsXRayPropagator().extract({"X-Amzn-Trace-Id": os.environ.get("_X_AMZN_TRACE_ID", "")})
    ids = []
    with tracer.start_as_current_span("handler", context=parent, kind=trace.SpanKind.SERVER) as h:
        ids.append(span_id(h))
        paddings = event.get("paddings", [])
        for i in range(int(event.get("children", 2))):
            with tracer.start_as_current_span("step-%d" % i) as s:
                s.set_attribute("step", i)
                if padded and i < len(paddings):
                    s.set_attribute("padding", padding_text(int(paddings[i])))
                elif padded:
                    s.set_attribute("padding", "x" * int(event.get("padding", 0)))
                ids.append(span_id(s))
        trace_id = format(h.get_span_context().trace_id, "032x")
    return ids, trace_id
