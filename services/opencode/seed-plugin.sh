#!/bin/sh
# Image build step (as the sandbox user, with registry access): let OpenCode's own installer put
# @opencode-ai/plugin into the global config dir (~/.config/opencode) and, through a scratch
# project's .opencode dir, into the npm cache (~/.npm) in the exact form it asks for (full
# packuments included). At run time the sandbox has no registry: the global dir is then complete,
# and a workspace's own .opencode dir installs from the cache (NPM_CONFIG_OFFLINE=true).
# The global dir is installed from the plugin lock of this OpenCode release (plugin-lock/VERSION.json,
# `npm install --package-lock-only` of @opencode-ai/plugin@VERSION): exactly those packages, checked
# by integrity after the install.
#   seed-plugin.sh PLUGIN_LOCK_DIR
set -eu
locks="$1"
version="$(opencode --version)"
lock="$locks/$version.json"
if [ ! -f "$lock" ]; then
    echo "no plugin lock for OpenCode $version (services/opencode/plugin-lock/$version.json); make it with:" >&2
    echo "  echo '{\"dependencies\":{\"@opencode-ai/plugin\":\"$version\"}}' > package.json && npm install --package-lock-only" >&2
    exit 1
fi
mkdir -p "$HOME/.config/opencode"
printf '{\n  "dependencies": {\n    "@opencode-ai/plugin": "%s"\n  }\n}\n' "$version" > "$HOME/.config/opencode/package.json"
cp "$lock" "$HOME/.config/opencode/package-lock.json"
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

# What was installed is the lock: every package at the locked version and integrity, nothing else.
node -e '
const fs = require("fs"), path = require("path");
const [dir, lockFile] = process.argv.slice(1);
const want = JSON.parse(fs.readFileSync(lockFile)).packages;
const bad = [];
for (const [where, entry] of Object.entries(want)) {
  if (!where || entry.optional) continue;  // optional: other platforms binaries, installed only where they run
  const file = path.join(dir, where, "package.json");
  if (!fs.existsSync(file)) { bad.push(`${where} missing`); continue; }
  const got = JSON.parse(fs.readFileSync(file)).version;
  if (got !== entry.version) bad.push(`${where} ${got}, locked ${entry.version}`);
}
const lock = JSON.parse(fs.readFileSync(path.join(dir, "package-lock.json"))).packages;
for (const [where, entry] of Object.entries(lock)) {
  if (where && (!want[where] || want[where].integrity !== entry.integrity)) bad.push(`${where} not as locked`);
}
if (!lock[""].dependencies["@opencode-ai/plugin"]) bad.push("@opencode-ai/plugin not a dependency");
if (bad.length) { console.error("plugin install differs from the lock: " + bad.join("; ")); process.exit(1); }
' "$HOME/.config/opencode" "$lock"
# Keep the installed plugin and the npm cache; drop the scratch project, logs and state it created.
rm -rf "$seed" "$HOME/.npm/_logs" "$HOME/.local/share/opencode/"* "$HOME/.local/state/opencode/"* "$HOME/.cache/opencode/"*
echo "seeded: $(cat "$HOME/.config/opencode/package.json" | tr -d ' \n')"
