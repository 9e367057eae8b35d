#!/bin/sh
# Container health: OpenCode's server answers its OpenAPI document at /doc (with HTTP basic auth
# when the server is protected with OPENCODE_SERVER_PASSWORD). No proxy: it is this container's own port.
if [ -n "${OPENCODE_SERVER_PASSWORD:-}" ]; then
    printf 'user = "%s:%s"\n' "${OPENCODE_SERVER_USERNAME:-opencode}" "$OPENCODE_SERVER_PASSWORD" \
        | exec curl -fsS --noproxy '*' -m 4 -o /dev/null -K - http://127.0.0.1:4096/doc
fi
exec curl -fsS --noproxy '*' -m 4 -o /dev/null http://127.0.0.1:4096/doc
