#!/bin/sh
# Entry point of the Ralex agent container.
#   (no arguments)            opencode serve --hostname 127.0.0.1 --port 4096 (the image's CMD)
#   run "fix the typo ..."    an OpenCode subcommand: "opencode" is put in front
#   bash                      any program on PATH runs as given
set -eu

# PID 1 must reap the agent's orphaned shell children and forward signals. Compose gives the
# container Docker's init (init: true); a plain `docker run` without --init makes this script PID 1,
# so it re-runs itself under tini. No subreaper flag (tini -s): qemu-user, which runs arm64 images
# on other hosts, does not implement PR_SET_CHILD_SUBREAPER, and PID 1 needs none.
if [ "$$" = 1 ]; then
    exec tini -g -- "$0" "$@"
fi

if [ ! -r "${OPENCODE_CONFIG:-/etc/ralex/opencode/opencode.json}" ]; then
    echo "ralex-opencode: cannot read OpenCode config ${OPENCODE_CONFIG:-}" >&2
    exit 1
fi
if [ "$#" -eq 0 ]; then
    set -- opencode serve --hostname 127.0.0.1 --port 4096
elif [ "${1#-}" != "$1" ] || ! command -v "$1" >/dev/null 2>&1; then
    set -- opencode "$@"
fi

if [ "$1" = opencode ] && { [ "${2:-}" = serve ] || [ "${2:-}" = run ]; }; then
    if [ -z "${RALEX_AGENT_KEY:-}" ]; then
        echo "ralex-opencode: warning: RALEX_AGENT_KEY is empty; the proxy at ${RALEX_PROXY_URL:-?} will refuse requests" >&2
    fi
    if [ ! -w /workspace ]; then
        echo "ralex-opencode: warning: /workspace is not writable by $(id -un) (uid $(id -u)); mount a folder owned by that uid" >&2
    fi
fi
# npm's cache (a workspace's .opencode installs from it) lives on the cache volume: the first start
# copies the image's seeded entries into it (npm writes to its cache, and the root is read-only).
seed="$HOME/.npm/_cacache" cache="${NPM_CONFIG_CACHE:-}/_cacache"
if [ -n "${NPM_CONFIG_CACHE:-}" ] && [ -d "$seed" ] && [ ! -f "$cache/.ralex-seeded" ]; then
    { mkdir -p "$cache" && cp -R "$seed/." "$cache/" && touch "$cache/.ralex-seeded"; } \
        || echo "ralex-opencode: warning: cannot prepare the npm cache in $NPM_CONFIG_CACHE" >&2
fi
# The container has no network: 127.0.0.1:4000 (RALEX_PROXY_URL) is relayed to the proxy's socket,
# 127.0.0.1:3128 (HTTP(S)_PROXY) to the egress proxy's. A relay logs one line per failed connection
# and keeps listening (no -d: a client hanging up mid-stream is not worth a warning).
relay() {
    socat -ls "TCP-LISTEN:$1,bind=127.0.0.1,reuseaddr,fork,nodelay" "UNIX-CONNECT:$2" 2>&1 \
        | sed -u "s|^.* E connect(.*): \(.*\)$|ralex-relay: $3 socket $2: \1|" >&2 &
}
if [ -n "${RALEX_AGENT_SOCKET:-}" ]; then
    relay "${RALEX_RELAY_PORT:-4000}" "$RALEX_AGENT_SOCKET" proxy
fi
if [ -n "${RALEX_EGRESS_SOCKET:-}" ]; then
    relay "${RALEX_EGRESS_RELAY_PORT:-3128}" "$RALEX_EGRESS_SOCKET" egress
fi
exec "$@"
