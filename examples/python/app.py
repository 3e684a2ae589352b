"""Sample Lambda function for the loupe demo and tests (handler: app.handler).

Each payload describes one HTTP request the "app" served. The function prints EMF lines through
aws-embedded-metrics so the values are known from the payload:

- DbWriteLatency (Milliseconds, dimension `customer`): one value per entry of `dbLatencyMs`,
  property `requestId` (the app's HTTP request id).
- S3ObjectWrite (Count): one per `objectKey`, properties `requestId` and `objectKey`.
- UserFeedback (Count, dimension `sentiment`: thanks / curses): when `sentiment` is set,
  property `userId`.

Payload fields that change the outcome:
- `fail`: raise an error after printing the user id (status `error`).
- `sleepMs`: sleep that long (past the function timeout gives status `timeout`).
- `crash`: exit the process (status `failure`, Runtime.ExitError).
- `logBytes`: print one line of that many characters (long log lines).
- `logLines`: print that many short lines (a chatty function).
"""

import logging
import os
import time

from aws_embedded_metrics import metric_scope
from aws_embedded_metrics.logger.metrics_logger_factory import create_metrics_logger

NAMESPACE = "loupe-demo"

log = logging.getLogger()
log.setLevel(logging.INFO)
# The library announces its environment detection at INFO; keep the sample's output to its own lines.
logging.getLogger("aws_embedded_metrics").setLevel(logging.WARNING)


class PaymentFailed(Exception):
    """The app's own error type, so the errorType in telemetry is recognisable."""


def _latencies(event):
    value = event.get("dbLatencyMs", [])
    if isinstance(value, (int, float)):
        return [value]
    return [v for v in value if isinstance(v, (int, float))]


@metric_scope
def handler(event, context, metrics):
    if not isinstance(event, dict):
        event = {}
    customer = str(event.get("customer", "unknown"))
    http_request_id = str(event.get("requestId", context.aws_request_id))
    user_id = event.get("userId")

    # Database writes: a latency distribution per customer.
    metrics.set_namespace(NAMESPACE)
    metrics.set_dimensions({"customer": customer})
    for latency in _latencies(event):
        metrics.put_metric("DbWriteLatency", latency, "Milliseconds")
    metrics.set_property("requestId", http_request_id)
    if user_id is not None:
        # The user this request served: loupe puts it on this line's event and, if the
        # invocation fails, on its error event.
        metrics.set_property("userId", str(user_id))

    # An S3 object written on behalf of this HTTP request.
    object_key = event.get("objectKey")
    if object_key:
        s3 = create_metrics_logger()
        s3.set_namespace(NAMESPACE)
        s3.set_dimensions({"bucket": str(event.get("bucket", "uploads"))})
        s3.put_metric("S3ObjectWrite", 1, "Count")
        s3.set_property("requestId", http_request_id)
        s3.set_property("objectKey", str(object_key))
        s3.flush_sync()
        log.info("stored object %s for request %s", object_key, http_request_id)

    # User feedback: thanks or curses.
    sentiment = event.get("sentiment")
    if sentiment in ("thanks", "curses"):
        feedback = create_metrics_logger()
        feedback.set_namespace(NAMESPACE)
        feedback.set_dimensions({"sentiment": sentiment})
        feedback.put_metric("UserFeedback", 1, "Count")
        if user_id is not None:
            feedback.set_property("userId", str(user_id))
        feedback.flush_sync()

    log_bytes = event.get("logBytes")
    if isinstance(log_bytes, int) and 0 < log_bytes <= 8 * 1024 * 1024:
        print("x" * log_bytes, flush=True)

    log_lines = event.get("logLines")
    if isinstance(log_lines, int) and 0 < log_lines <= 1_000_000:
        print("\n".join(f"line {i}" for i in range(log_lines)), flush=True)

    sleep_ms = event.get("sleepMs")
    if isinstance(sleep_ms, (int, float)) and sleep_ms > 0:
        time.sleep(sleep_ms / 1000.0)

    if event.get("crash"):
        print(f"crashing on purpose for userId={user_id}", flush=True)
        os._exit(3)

    if event.get("fail"):
        print(f"payment failed for userId={user_id} request {http_request_id}", flush=True)
        raise PaymentFailed(f"payment failed for user {user_id}")

    return {"ok": True, "customer": customer, "requestId": http_request_id, "objectKey": object_key}
