#!/usr/bin/env bash
# text.shout: `text` in capitals. A guirpc pipe function in bash and jq: one JSON call per
# line in, one JSON answer per line out (docs/PIPES.md).
while IFS= read -r line; do
  printf '%s\n' "$(jq -c '{ok: (.args.text | ascii_upcase)}' <<<"$line")"
done
