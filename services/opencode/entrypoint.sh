#!/bin/sh
# Entry point of the Ralex agent container (run under tini, which forwards signals).
#   (no arguments)            opencode serve --hostname 0.0.0.0 --port 4096 (the image's CMD)
#   run "fix the typo ..."    an OpenCode subcommand: "opencode" is put in front
#   bash                      any program on PATH runs as given
set -eu

if [ ! -r "${OPENCODE_CONFIG:-/etc/ralex/opencode/opencode.json}" ]; then
    echo "ralex-opencode: cannot read OpenCode config ${OPENCODE_CONFIG:-}" >&2
    exit 1
fi
if [ "$#" -eq 0 ]; then
    set -- opencode serve --hostname 0.0.0.0 --port 4096
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
exec "$@"
