"""Calls a guirpc function with pika and JSON, as docs/PROTOCOL.md specifies.

Usage: python3 examples/python/call.py QUEUE FUNCTION JSON_ARGS [--uri URI] [--timeout SECONDS]

Prints the result as JSON and exits 0. Otherwise prints the error on stderr and exits like
the guirpc command line: 1 the function failed or refused the call (the error envelope),
3 the broker is unreachable, 4 no reply in time, 5 no such service queue.
"""
import argparse
import json
import os
import sys
import time
import uuid

import pika

REPLY_TO = "amq.rabbitmq.reply-to"


def call(uri, queue, function, args, timeout):
    connection = pika.BlockingConnection(pika.URLParameters(uri))
    channel = connection.channel()
    correlation_id = str(uuid.uuid4())
    outcome = {}

    def on_reply(channel, method, props, body):
        if props.correlation_id == correlation_id:
            outcome["reply"] = (props.type, json.loads(body))

    def on_return(channel, method, props, body):
        outcome["returned"] = method.reply_text

    # Consume direct reply-to before publishing, on the channel that publishes.
    channel.basic_consume(REPLY_TO, on_reply, auto_ack=True)
    channel.add_on_return_callback(on_return)
    timeout_ms = max(1, round(timeout * 1000))
    channel.basic_publish(
        exchange="", routing_key=queue, mandatory=True, body=json.dumps(args),
        properties=pika.BasicProperties(
            content_type="application/json", correlation_id=correlation_id,
            reply_to=REPLY_TO, expiration=str(timeout_ms),
            type=function,  # protocol version 2: the function, and the deadline in ms
            timestamp=int(time.time() * 1000) + timeout_ms))
    deadline = time.monotonic() + timeout
    while not outcome and time.monotonic() < deadline:
        connection.process_data_events(time_limit=max(0, deadline - time.monotonic()))
    connection.close()
    return outcome


def main():
    parser = argparse.ArgumentParser(description="Call a guirpc function.")
    parser.add_argument("queue")
    parser.add_argument("function")
    parser.add_argument("args", metavar="JSON_ARGS", type=json.loads,
                        help="an object by parameter name, or an array in order")
    parser.add_argument("--uri", default=os.environ.get(
        "GUIRPC_URI", "amqp://guest:guest@127.0.0.1:5672/%2f"))
    parser.add_argument("--timeout", metavar="SECONDS", type=float, default=30.0)
    opts = parser.parse_args()
    try:
        outcome = call(opts.uri, opts.queue, opts.function, opts.args, opts.timeout)
    except pika.exceptions.AMQPConnectionError as err:
        print(f"broker unreachable: {err!r}", file=sys.stderr)
        return 3
    if "returned" in outcome:
        print(f"no service queue `{opts.queue}`: {outcome['returned']}", file=sys.stderr)
        return 5
    if "reply" not in outcome:
        print(f"no reply within {opts.timeout}s", file=sys.stderr)
        return 4
    status, body = outcome["reply"]
    if status != "ok":  # an error envelope: {"code", "message", "detail"}
        print(json.dumps(body), file=sys.stderr)
        return 1
    print(json.dumps(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
