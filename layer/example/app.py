"""Example function for the xray-extension layer.

It uses the AWS X-Ray SDK for Python as any traced function does. The SDK sends each closed
subsegment over UDP to AWS_XRAY_DAEMON_ADDRESS, which the layer's wrapper script
(AWS_LAMBDA_EXEC_WRAPPER=/opt/xray-extension-wrapper) points at the extension instead of
Lambda's own daemon. Nothing here knows about the extension.

Invoke with, for example:
    {"order_id": "o-42", "items": [{"sku": "tea", "qty": 2}], "customer_tier": "gold"}
and add "fail": true to see an error recorded on the subsegment and the function.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from aws_xray_sdk.core import xray_recorder

# Cents per unit; a stand-in for a price lookup.
PRICES = {"tea": 450, "coffee": 380, "cake": 520}


class OrderError(ValueError):
    pass


@xray_recorder.capture("load_customer")
def load_customer(order_id: str, tier: str) -> dict[str, Any]:
    # Annotations are indexed: filter on them in the X-Ray console (annotation.customer_tier = "gold").
    xray_recorder.current_subsegment().put_annotation("customer_tier", tier)
    time.sleep(0.005)  # stands for a database read
    digest = hashlib.sha256(order_id.encode()).hexdigest()[:8]
    return {"customer_id": f"c-{digest}", "tier": tier}


def price(items: list[dict[str, Any]]) -> int:
    with xray_recorder.in_subsegment("price_order") as sub:
        total = 0
        for item in items:
            sku = str(item.get("sku", ""))
            if sku not in PRICES:
                raise OrderError(f"unknown sku {sku!r}")
            total += PRICES[sku] * int(item.get("qty", 1))
        sub.put_annotation("item_count", len(items))
        sub.put_annotation("total_cents", total)
        # Metadata is not indexed but can hold any JSON.
        sub.put_metadata("items", items, "order")
        return total


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    order_id = str(event.get("order_id", "o-1"))
    items = event.get("items") or [{"sku": "tea", "qty": 1}]
    with xray_recorder.in_subsegment("handle_order") as sub:
        sub.put_annotation("order_id", order_id)
        customer = load_customer(order_id, str(event.get("customer_tier", "standard")))
        if event.get("fail"):
            # in_subsegment records the exception (fault and cause) on the subsegment, then
            # re-raises it so Lambda reports the invocation as failed.
            raise OrderError(f"order {order_id} rejected on request")
        total = price(items)
        sub.put_annotation("accepted", True)
    return {"order_id": order_id, "customer_id": customer["customer_id"], "total_cents": total}
