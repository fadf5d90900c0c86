#!/usr/bin/env python3
"""Seeds the fuzz corpora from the repository's fixtures (run from anywhere; stdlib only).

corpus/datagram      the captured SDK datagrams (fixtures/datagrams/*.bin)
corpus/telemetry     every Telemetry API body: fixtures/telemetry/*.json, each delivery inside
                     fixtures/enrich/*.json, and each enrich scenario's deliveries as one array
corpus/trace_header  every X-Amzn-Trace-Id value found in those fixtures, and a few spellings
corpus/otlp          the ExportTraceServiceRequest inside each captured T1S/T1U datagram, and
                     fixtures/otlp/*.json (OTLP/HTTP JSON bodies)

Files are named by content hash, so re-seeding never duplicates an input libFuzzer already has.
"""

import base64
import glob
import hashlib
import json
import os
import sys

FUZZ = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(FUZZ, "..", "fixtures")


def write(target, data):
    directory = os.path.join(FUZZ, "corpus", target)
    os.makedirs(directory, exist_ok=True)
    name = "seed-" + hashlib.sha1(data).hexdigest()
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def trace_values(node, out):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "value" and isinstance(value, str) and "Root=" in value:
                out.add(value)
            else:
                trace_values(value, out)
    elif isinstance(node, list):
        for value in node:
            trace_values(value, out)


def main():
    counts = {"datagram": 0, "telemetry": 0, "trace_header": 0, "otlp": 0}
    for path in sorted(glob.glob(os.path.join(FIXTURES, "datagrams", "*.bin"))):
        with open(path, "rb") as f:
            raw = f.read()
        write("datagram", raw)
        counts["datagram"] += 1
        body = raw.split(b"\n", 1)[-1]
        if body[:3] in (b"T1S", b"T1U"):
            write("otlp", base64.b64decode(body[3:]))
            counts["otlp"] += 1
    for path in sorted(glob.glob(os.path.join(FIXTURES, "otlp", "*.json"))):
        with open(path, "rb") as f:
            write("otlp", f.read())
        counts["otlp"] += 1

    headers = set()
    for path in sorted(glob.glob(os.path.join(FIXTURES, "telemetry", "*.json"))):
        with open(path, "rb") as f:
            raw = f.read()
        write("telemetry", raw)
        counts["telemetry"] += 1
        trace_values(json.loads(raw), headers)
    for path in sorted(glob.glob(os.path.join(FIXTURES, "enrich", "*.json"))):
        with open(path, encoding="utf-8") as f:
            scenario = json.load(f)
        deliveries = [s["telemetry"] for s in scenario.get("steps", []) if "telemetry" in s]
        for delivery in deliveries:
            write("telemetry", json.dumps(delivery, separators=(",", ":")).encode())
            counts["telemetry"] += 1
        whole = [record for delivery in deliveries for record in delivery]
        write("telemetry", json.dumps(whole, separators=(",", ":")).encode())
        counts["telemetry"] += 1
        trace_values(scenario, headers)

    headers |= {
        "Root=1-5f35ae12-0c0fec141ab77a00bc047aa2;Parent=2be948a625588e32;Sampled=1",
        " sampled=0 ; Lineage=a87bd80c:1|68fd508a:5 ; parent=2be948a625588e32; ROOT=1-5f35ae12-0c0fec141ab77a00bc047aa2",
        "Root=1-5f35ae12-0c0fec141ab77a00bc047aa2;Sampled=?",
        "Root=1-5f35ae12-0c0fec141ab77a00bc047aa2",
    }
    for header in sorted(headers):
        write("trace_header", header.encode())
        counts["trace_header"] += 1

    print(" ".join(f"{target}={n}" for target, n in counts.items()), "seeds", file=sys.stderr)


if __name__ == "__main__":
    main()
