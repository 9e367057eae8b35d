#!/bin/sh
# Image build step (as the sandbox user, with registry access): let OpenCode's own installer put
# @opencode-ai/plugin into the global config dir (~/.config/opencode) and, through a scratch
# project's .opencode dir, into the npm cache (~/.npm) in the exact form it asks for (full
# packuments included). At run time the sandbox has no registry: the global dir is then complete,
# and a workspace's own .opencode dir installs from the cache (NPM_CONFIG_OFFLINE=true).
set -eu
port=4199
seed="$(mktemp -d)"
mkdir "$seed/.opencode"
opencode serve --hostname 127.0.0.1 --port "$port" >"$seed/serve.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT

get() { node --no-warnings -e 'fetch(process.argv[1]).then(r=>process.exit(r.ok?0:1)).catch(()=>process.exit(1))' "$1"; }
done_in() { [ -f "$1/package-lock.json" ] && [ -f "$1/node_modules/@opencode-ai/plugin/package.json" ]; }

i=0
until get "http://127.0.0.1:$port/config?directory=$seed"; do
    i=$((i + 1)); [ "$i" -lt 60 ] || { cat "$seed/serve.log" >&2; echo "seed: opencode serve did not answer" >&2; exit 1; }
    sleep 1
done
i=0
until done_in "$HOME/.config/opencode" && done_in "$seed/.opencode"; do
    i=$((i + 1)); [ "$i" -lt 300 ] || { cat "$seed/serve.log" >&2; echo "seed: plugin install did not finish" >&2; exit 1; }
    sleep 1
done
sleep 2  # let the installer finish writing hidden lockfiles
kill "$pid"; wait "$pid" 2>/dev/null || true
trap - EXIT

node -e 'const l=require(process.argv[1]);if(!l.packages[""].dependencies["@opencode-ai/plugin"])process.exit(1)' \
    "$HOME/.config/opencode/package-lock.json"
# Keep the installed plugin and the npm cache; drop the scratch project, logs and state it created.
rm -rf "$seed" "$HOME/.npm/_logs" "$HOME/.local/share/opencode/"* "$HOME/.local/state/opencode/"* "$HOME/.cache/opencode/"*
echo "seeded: $(cat "$HOME/.config/opencode/package.json" | tr -d ' \n')"
