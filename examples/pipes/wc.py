"""text.wc: counts the words of `text`. A guirpc pipe function: one JSON call per line in,
one JSON answer per line out (docs/PIPES.md)."""
import json
import sys

for line in sys.stdin:
    call = json.loads(line)
    text = call["args"].get("text")
    if not isinstance(text, str):
        answer = {"error": {"message": "text must be a string", "detail": {"got": text}}}
    else:
        answer = {"ok": len(text.split())}
    print(json.dumps(answer), flush=True)
