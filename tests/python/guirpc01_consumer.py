"""A consumer of the Python package guirpc 0.1, unchanged, for the migration tests: serves
`add` (JSON {"a", "b"} -> {"result": a + b}, 400 when they are not integers), `shout`
(text -> its capitals) and `fail` (raises) until it is killed."""
import argparse
import logging

from guirpc.amqp.consumer import ProxyReconnectConsumer
from guirpc.amqp.decorators import register_faas
from guirpc.amqp.domain import ProxyResponse
from guirpc.amqp.domain.objects import AMQPEntities
from guirpc.amqp.serializers import JsonSerializer, TextSerializer


@register_faas(req_sz=JsonSerializer, resp_sz=JsonSerializer)
def add(request):
    body = request.object
    if not isinstance(body, dict) or not all(isinstance(body.get(k), int) for k in ("a", "b")):
        return ProxyResponse(400, error_message="[ValidationError] 'a' and 'b' must be integers")
    return ProxyResponse(200, object_={"result": body["a"] + body["b"]})


@register_faas(req_sz=TextSerializer, resp_sz=TextSerializer)
def shout(request):
    return ProxyResponse(200, object_=request.object.upper())


@register_faas(req_sz=JsonSerializer, resp_sz=JsonSerializer)
def fail(request):
    raise RuntimeError("boom")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--exchange", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--routing-key", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    entities = AMQPEntities(
        exchange=args.exchange, exchange_type="direct", queue=args.queue, routing_key=args.routing_key
    )
    ProxyReconnectConsumer(
        faas_callables={"add": add, "shout": shout, "fail": fail},
        amqp_url=args.url,
        amqp_entities=entities,
        prefetch_count=1,
    ).run()


if __name__ == "__main__":
    main()
