"""Checks EMF lines (one per argument) through the aws-embedded-metrics package's own model.

Each line's namespace, dimensions, metrics, units and timestamp are put into a MetricsContext
(whose setters validate them as the library's users are validated), serialized with the
library's LogSerializer, and the result must say the same as the line. Prints one "valid" per
line; exits non-zero with the reason otherwise.
"""

import json
import sys
from datetime import datetime, timezone

from aws_embedded_metrics.logger.metrics_context import MetricsContext
from aws_embedded_metrics.serializers.log_serializer import LogSerializer
from aws_embedded_metrics.validator import validate_namespace


def check(line: str) -> None:
    ours = json.loads(line)
    aws = ours["_aws"]
    (directive,) = aws["CloudWatchMetrics"]
    validate_namespace(directive["Namespace"])
    context = MetricsContext(namespace=directive["Namespace"])
    context.set_dimensions([{key: ours[key] for key in keys} for keys in directive["Dimensions"]])
    for metric in directive["Metrics"]:
        context.put_metric(metric["Name"], ours[metric["Name"]], metric.get("Unit"))
    context.set_timestamp(datetime.fromtimestamp(aws["Timestamp"] / 1000, tz=timezone.utc))
    (theirs,) = [json.loads(s) for s in LogSerializer.serialize(context)]

    def normalised(doc):
        d = dict(doc)
        aws = dict(d.pop("_aws"))
        (cw,) = aws.pop("CloudWatchMetrics")
        metrics = sorted((m["Name"], m.get("Unit")) for m in cw["Metrics"])
        return d, aws, cw["Namespace"], cw["Dimensions"], metrics

    if normalised(ours) != normalised(theirs):
        raise SystemExit(f"differs from the library's serialization:\n ours   {ours}\n theirs {theirs}")
    print("valid")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit("usage: emf_check.py LINE...")
    for arg in sys.argv[1:]:
        check(arg)
