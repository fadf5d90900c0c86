"""A Python function traced with the real X-Ray SDK, run by AWS's runtime interface client.

Each invocation opens a subsegment with an annotation and a nested one; the SDK sends each as its
own datagram to AWS_XRAY_DAEMON_ADDRESS when it closes. The ids are returned so the test can find
them in X-Ray.
"""

import time

from aws_xray_sdk.core import xray_recorder


def handler(event, context):
    ids = []
    with xray_recorder.in_subsegment("python-work") as sub:
        sub.put_annotation("customer", "c-123")
        sub.put_metadata("event", event, "app")
        ids.append(sub.id)
        with xray_recorder.in_subsegment("python-inner") as inner:
            ids.append(inner.id)
            # Time spent in the handler (concurrent invocations overlap on Managed Instances).
            time.sleep(event.get("sleep_ms", 0) / 1000)
    if event.get("error"):
        raise ValueError("the event asked for an error")
    return {
        "sent_ids": ids,
        "trace_id": xray_recorder.current_segment().trace_id,
        # Lambda-Runtime-Aws-Tenant-Id, as awslambdaric read it.
        "tenant_id": getattr(context, "tenant_id", None),
    }
