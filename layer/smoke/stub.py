#!/usr/bin/env python3
"""Smoke test for a built extension binary, native or under an emulator such as qemu-aarch64.

    stub.py --binary PATH [--launcher qemu-aarch64]
            [--example-python PYTHON --example-dir DIR --wrapper SCRIPT]

One small HTTP server on 127.0.0.1 plays both the Lambda Extensions API (register, event/next,
init/exit error, and a Telemetry API that answers "not supported", as AWS's local emulator does)
and the X-Ray API (PUT TraceSegments). Each scenario starts the binary against it and checks:

- it registers as `xray-extension` for INVOKE and SHUTDOWN;
- it takes an INVOKE, then a SHUTDOWN, and exits with code 0 before the deadline;
- a subsegment sent to its UDP port during the invocation reaches PutTraceSegments;
- with invalid settings it still registers and works, warning about each variable;
- with --example-python: the example function (layer/example/app.py, real aws_xray_sdk),
  started through the layer's wrapper script during the invocation, gets its subsegments, with
  their annotations, exported through the extension.

Ports are free ones picked at start, so it runs beside a real daemon or another test. Prints
"N passed, N failed" last and exits non-zero on any failure.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

EXTENSIONS = "/2020-01-01/extension"
# Where the extension writes its UDP address for the wrapper: this run's own file, so a run
# beside other tests on the same machine never reads another extension's address.
ADDRESS_FILE = os.path.join(
    os.environ.get("TMPDIR", "/tmp"), f"xray-extension-udp-address-smoke-{os.getpid()}"
)
TELEMETRY = "/2022-07-01/telemetry"
# Whole-scenario limit: qemu startup plus a 2 s shutdown, with room for a loaded machine.
SCENARIO_TIMEOUT_S = 60.0
SHUTDOWN_DEADLINE_MS = 2_000


class Stub:
    """State of one scenario, shared by the handler threads."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.extension_id = str(uuid.uuid4())
        self.trace_id = f"1-{int(time.time()):08x}-{secrets.token_hex(12)}"
        self.parent_id = secrets.token_hex(8)
        self.subsegment_id = secrets.token_hex(8)
        self.udp_address: tuple[str, int] | None = None
        self.registrations: list[dict] = []
        self.subscriptions = 0
        self.next_calls = 0
        self.errors: list[str] = []
        self.notes: list[str] = []
        self.documents: list[dict] = []
        self.shutdown_sent_at: float | None = None
        # Runs "the function" during the invocation instead of sending one datagram.
        self.function: Callable[[Stub], None] | None = None

    def datagram(self) -> bytes:
        now = time.time()
        body = {
            "id": self.subsegment_id,
            "name": "smoke",
            "start_time": now - 0.01,
            "end_time": now,
            "trace_id": self.trace_id,
            "parent_id": self.parent_id,
            "type": "subsegment",
            "namespace": "local",
            "annotations": {"smoke": True},
        }
        return b'{"format":"json","version":1}\n' + json.dumps(body).encode()


def handler_for(stub: Stub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (base signature)
            pass

        def body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def reply(self, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802 (http.server naming)
            raw = self.body()
            if self.path == f"{EXTENSIONS}/register":
                with stub.lock:
                    stub.registrations.append(
                        {
                            "name": self.headers.get("Lambda-Extension-Name"),
                            "body": json.loads(raw or b"{}"),
                        }
                    )
                self.reply(
                    200,
                    {
                        "functionName": "smoke",
                        "functionVersion": "$LATEST",
                        "handler": "app.handler",
                    },
                    {"Lambda-Extension-Identifier": stub.extension_id},
                )
            elif self.path in (f"{EXTENSIONS}/init/error", f"{EXTENSIONS}/exit/error"):
                with stub.lock:
                    stub.errors.append(
                        f"{self.path}: {self.headers.get('Lambda-Extension-Function-Error-Type')}"
                    )
                self.reply(202, {"status": "OK"})
            elif self.path == "/TraceSegments":
                docs = json.loads(raw or b"{}").get("TraceSegmentDocuments", [])
                with stub.lock:
                    stub.documents.extend(json.loads(d) for d in docs)
                    stub.lock.notify_all()
                self.reply(200, {"UnprocessedTraceSegments": []})
            elif self.path == "/TelemetryRecords":
                self.reply(200, {})
            else:
                self.reply(404, {"errorType": "NotFound", "errorMessage": self.path})

        def do_PUT(self) -> None:  # noqa: N802
            self.body()
            if self.path == TELEMETRY:
                with stub.lock:
                    stub.subscriptions += 1
                # What AWS's local emulator answers: the extension must carry on without it.
                self.reply(202, {"errorType": "Telemetry.NotSupported", "errorMessage": "stub"})
            else:
                self.reply(404, {"errorType": "NotFound", "errorMessage": self.path})

        def do_GET(self) -> None:  # noqa: N802
            if self.path != f"{EXTENSIONS}/event/next":
                self.reply(404, {"errorType": "NotFound", "errorMessage": self.path})
                return
            if self.headers.get("Lambda-Extension-Identifier") != stub.extension_id:
                self.reply(403, {"errorType": "Extension.Forbidden", "errorMessage": "bad id"})
                return
            with stub.lock:
                stub.next_calls += 1
                call = stub.next_calls
            now_ms = int(time.time() * 1000)
            if call == 1:
                self.reply(
                    200,
                    {
                        "eventType": "INVOKE",
                        "deadlineMs": now_ms + 3_000,
                        "requestId": str(uuid.uuid4()),
                        "invokedFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:smoke",
                        "tracing": {
                            "type": "X-Amzn-Trace-Id",
                            "value": f"Root={stub.trace_id};Parent={stub.parent_id};Sampled=1",
                        },
                    },
                )
            elif call == 2:
                # The function ran (and its SDK sent subsegments) during the invocation.
                assert stub.udp_address is not None
                if stub.function is not None:
                    stub.function(stub)
                else:
                    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                        s.sendto(stub.datagram(), stub.udp_address)
                with stub.lock:
                    stub.shutdown_sent_at = time.monotonic()
                self.reply(
                    200,
                    {
                        "eventType": "SHUTDOWN",
                        "deadlineMs": now_ms + SHUTDOWN_DEADLINE_MS,
                        "shutdownReason": "spindown",
                    },
                )
            else:
                # Lambda never answers next after SHUTDOWN; the process is killed at the deadline.
                # A request sent while the process is already exiting is harmless, so it is only
                # reported; the exit code and the exit time are what is checked.
                with stub.lock:
                    stub.notes.append("called event/next once more after SHUTDOWN (left unanswered)")
                    stub.lock.wait(SCENARIO_TIMEOUT_S)

    return Handler


def free_port(kind: int, host: str) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def run_scenario(
    name: str,
    command: list[str],
    extra_env: dict[str, str],
    function: Callable[[Stub], list[str]] | None = None,
) -> list[str]:
    """Runs the binary once; returns the failures (empty when it passed).

    `function` runs in place of the single test datagram and returns the names of the
    subsegments it expects exported.
    """
    stub = Stub()
    expected_names: list[str] = []
    function_failures: list[str] = []
    if function is not None:

        def run_function(st: Stub) -> None:
            try:
                expected_names.extend(function(st))
            except Exception as e:  # noqa: BLE001 (reported as a failure of the scenario)
                function_failures.append(f"the example function failed: {e}")

        stub.function = run_function
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(stub))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = f"127.0.0.1:{server.server_address[1]}"
    udp_port = free_port(socket.SOCK_DGRAM, "127.0.0.1")
    stub.udp_address = ("127.0.0.1", udp_port)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_LAMBDA_RUNTIME_API": api,
        "AWS_LAMBDA_FUNCTION_NAME": "smoke",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "AKIDSMOKETEST",
        "AWS_SECRET_ACCESS_KEY": "smoke-test-secret",
        "AWS_SESSION_TOKEN": "smoke-test-token",
        "AWS_ENDPOINT_URL_XRAY": f"http://{api}",
        "XRAY_EXTENSION_UDP_ADDRESS": f"127.0.0.1:{udp_port}",
        "XRAY_EXTENSION_ADDRESS_FILE": ADDRESS_FILE,
        "XRAY_EXTENSION_TELEMETRY_PORT": str(free_port(socket.SOCK_STREAM, "0.0.0.0")),
        "XRAY_EXTENSION_LOG_LEVEL": "info",
        **extra_env,
    }
    started = time.monotonic()
    failures: list[str] = []
    try:
        proc = subprocess.run(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=SCENARIO_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as e:
        stderr = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        failures.append(f"did not exit within {SCENARIO_TIMEOUT_S:.0f} s")
        code = None
    else:
        stderr = proc.stderr
        code = proc.returncode
    elapsed = time.monotonic() - started
    server.shutdown()
    with stub.lock:
        stub.lock.notify_all()

    if code is not None and code != 0:
        failures.append(f"exit code {code}, expected 0")
    if len(stub.registrations) != 1:
        failures.append(f"{len(stub.registrations)} registrations, expected 1")
    else:
        reg = stub.registrations[0]
        if reg["name"] != "xray-extension":
            failures.append(f"registered as {reg['name']!r}, expected 'xray-extension'")
        events = sorted(reg["body"].get("events", []))
        if events != ["INVOKE", "SHUTDOWN"]:
            failures.append(f"registered for {events}, expected INVOKE and SHUTDOWN")
    if stub.next_calls < 2:
        failures.append(f"called event/next {stub.next_calls} times, expected 2")
    if stub.shutdown_sent_at is not None and code is not None:
        # The process exited before subprocess.run returned; check it left inside the deadline.
        after_shutdown = time.monotonic() - stub.shutdown_sent_at
        if after_shutdown > SHUTDOWN_DEADLINE_MS / 1000 + 1.0:
            failures.append(f"exited {after_shutdown:.2f} s after SHUTDOWN")
    failures.extend(stub.errors)
    failures.extend(function_failures)
    if function is not None:
        failures.extend(check_example_documents(stub, expected_names))
    else:
        exported = [d for d in stub.documents if d.get("id") == stub.subsegment_id]
        if not exported:
            failures.append(
                f"the UDP subsegment was not exported ({len(stub.documents)} other documents)"
            )
        elif exported[0].get("trace_id") != stub.trace_id:
            failures.append("the exported subsegment lost its trace_id")
    for variable in extra_env:
        if variable.startswith("XRAY_EXTENSION_") and variable not in stderr:
            failures.append(f"no warning naming {variable}")

    status = "ok" if not failures else "FAILED"
    print(f"--- {name}: {status} in {elapsed:.2f} s (exit {code}, {len(stub.documents)} documents exported)")
    for line in stderr.rstrip().splitlines():
        print(f"    | {line}")
    for n in stub.notes:
        print(f"    - note: {n}")
    for f in failures:
        print(f"    ! {f}")
    return failures


def example_function(python: str, example_dir: str, wrapper: str) -> Callable[[Stub], list[str]]:
    """The example handler, run as Lambda's Python runtime would be: through the wrapper."""
    code = (
        "import app\n"
        "print(app.handler({'order_id': 'o-smoke', 'customer_tier': 'gold',"
        " 'items': [{'sku': 'tea', 'qty': 2}]}, None))\n"
        "try:\n"
        "    app.handler({'order_id': 'o-fail', 'fail': True}, None)\n"
        "except app.OrderError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('expected OrderError')\n"
    )

    def run(stub: Stub) -> list[str]:
        assert stub.udp_address is not None
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": example_dir,
            "LAMBDA_TASK_ROOT": example_dir,
            "AWS_LAMBDA_FUNCTION_NAME": "smoke",
            "AWS_REGION": "us-east-1",
            "_X_AMZN_TRACE_ID": f"Root={stub.trace_id};Parent={stub.parent_id};Sampled=1",
            # Lambda's own daemon; the wrapper must replace it with the extension's address.
            "AWS_XRAY_DAEMON_ADDRESS": "169.254.79.129:2000",
            "XRAY_EXTENSION_UDP_ADDRESS": f"{stub.udp_address[0]}:{stub.udp_address[1]}",
            "XRAY_EXTENSION_ADDRESS_FILE": ADDRESS_FILE,
        }
        proc = subprocess.run(
            [wrapper, python, "-c", code],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"exit {proc.returncode}: {proc.stderr.strip()[-500:]}")
        # Two invocations: handle_order, load_customer, price_order; then handle_order and
        # load_customer for the failing order.
        return ["handle_order", "load_customer", "price_order", "handle_order", "load_customer"]

    return run


def check_example_documents(stub: Stub, expected: list[str]) -> list[str]:
    failures: list[str] = []
    docs = [d for d in stub.documents if d.get("trace_id") == stub.trace_id]
    names = sorted(d.get("name", "") for d in docs)
    if names != sorted(expected):
        failures.append(f"exported {names}, expected {sorted(expected)}")
        return failures
    ok = [
        d
        for d in docs
        if d["name"] == "handle_order" and d.get("annotations", {}).get("order_id") == "o-smoke"
    ]
    failed = [
        d
        for d in docs
        if d["name"] == "handle_order" and d.get("annotations", {}).get("order_id") == "o-fail"
    ]
    priced = [d for d in docs if d["name"] == "price_order"]
    if not ok or ok[0].get("annotations", {}).get("accepted") is not True:
        failures.append("handle_order for o-smoke lacks its annotations")
    if not failed or not (failed[0].get("fault") or failed[0].get("error")):
        failures.append("handle_order for o-fail is not marked as failed")
    elif not failed[0].get("cause", {}).get("exceptions"):
        failures.append("handle_order for o-fail has no exception in its cause")
    if not priced or priced[0].get("annotations", {}).get("total_cents") != 900:
        failures.append("price_order lacks total_cents=900")
    top = [d for d in docs if d.get("parent_id") == stub.parent_id]
    if sorted(d["name"] for d in top) != ["handle_order", "handle_order"]:
        failures.append("handle_order is not parented on the function's facade segment")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", required=True)
    parser.add_argument("--launcher", help="emulator to run the binary with, e.g. qemu-aarch64")
    parser.add_argument("--example-python", help="a python with aws_xray_sdk installed")
    parser.add_argument("--example-dir", help="the example function's code (layer/example)")
    parser.add_argument("--wrapper", help="the layer's exec wrapper script")
    args = parser.parse_args()
    example = (args.example_python, args.example_dir, args.wrapper)
    if any(example) and not all(example):
        parser.error("--example-python, --example-dir and --wrapper go together")
    command = ([args.launcher] if args.launcher else []) + [os.path.abspath(args.binary)]
    print(f"smoke: {' '.join(command)}")

    scenarios: list[tuple[str, dict[str, str], Callable[[Stub], list[str]] | None]] = [
        ("register, invoke, export, shutdown", {}, None),
        (
            "invalid settings still register and export",
            {
                "XRAY_EXTENSION_LOG_LEVEL": "loud",
                "XRAY_EXTENSION_FLUSH_TIMEOUT_MS": "soon",
                "XRAY_EXTENSION_BUFFER_BYTES": "-1",
                "XRAY_EXTENSION_ANNOTATIONS": "not a pair",
            },
            None,
        ),
    ]
    if all(example):
        scenarios.append(
            (
                "example function through the wrapper, real X-Ray SDK",
                {},
                example_function(*(os.path.abspath(p) for p in example)),
            )
        )
    passed = failed = 0
    for name, env, function in scenarios:
        if run_scenario(name, command, env, function):
            failed += 1
        else:
            passed += 1
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
