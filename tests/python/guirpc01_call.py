"""Calls a function through the producer of the Python package guirpc 0.1, unchanged, and
prints {"status", "object", "error_message"} as JSON. The package reads its connection from
an INI file named by PRODUCER_CONFIG_FILEPATH: one is written for the call. It has no
timeout of its own: an alarm gives up after --timeout seconds (exit code 2)."""
import argparse
import json
import os
import signal
import sys
import tempfile

from guirpc.amqp.decorators import faas_producer
from guirpc.amqp.domain import ProxyRequest
from guirpc.amqp.serializers import JsonSerializer, TextSerializer
from guirpc.amqp.utils import ClientConnector

INI = """[client]
verbose_name = guirpc01_call
root = unused
producer_application_id = guirpc01_call
[client.connection]
host = {host}
port = {port}
user = {user}
password = {password}
[client.amqp_entities]
exchange = {exchange}
routing_key = {routing_key}
[client.options]
response_consumer =
"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--exchange", required=True)
    parser.add_argument("--routing-key", required=True)
    parser.add_argument("--function", required=True)
    value = parser.add_mutually_exclusive_group(required=True)
    value.add_argument("--json")
    value.add_argument("--text")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", default="5672")
    parser.add_argument("--user", default="guest")
    parser.add_argument("--password", default="guest")
    parser.add_argument("--timeout", type=int, default=10)
    args = parser.parse_args()
    with tempfile.NamedTemporaryFile("w", suffix=".ini", delete=False) as ini:
        ini.write(INI.format(**vars(args)))
    os.environ["PRODUCER_CONFIG_FILEPATH"] = ini.name
    try:
        connector = ClientConnector()
    finally:
        os.unlink(ini.name)
    if args.text is not None:
        serializer, value = TextSerializer, args.text
    else:
        serializer, value = JsonSerializer, json.loads(args.json)

    @faas_producer(con=connector, faas_name=args.function, req_sz=serializer)
    def call(argument):
        return ProxyRequest(object_=argument)

    def give_up(*_):
        print(json.dumps({"status": None, "object": None, "error_message": "timeout"}))
        os._exit(2)

    signal.signal(signal.SIGALRM, give_up)
    signal.alarm(args.timeout)
    response = call(value)
    signal.alarm(0)
    print(json.dumps({
        "status": response.status_code,
        "object": response.object,
        "error_message": response.error_message,
    }))
    ClientConnector.close_all_connections()
    sys.exit(0 if response.is_success else 1)


if __name__ == "__main__":
    main()
