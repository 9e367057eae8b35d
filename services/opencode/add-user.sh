#!/bin/bash
# Image build step: the sandbox user ralex with the host user's ids, home /home/ralex.
#   add-user.sh UID GID
# Whatever account or group already holds the ids (node images have node:1000:1000, devcontainer
# images vscode:1000) is renamed to ralex and moved to /home/ralex, so files the agent writes in a
# mounted workspace belong to the host user with the same ids.
set -euo pipefail
uid="$1" gid="$2"
[ "$uid" != 0 ] && [ "$gid" != 0 ] || { echo "RALEX_UID/RALEX_GID must not be 0 (root)" >&2; exit 1; }
if getent group ralex >/dev/null && [ "$(getent group ralex | cut -d: -f3)" != "$gid" ]; then
    groupmod -n ralex-old ralex
fi
if group="$(getent group "$gid" | cut -d: -f1)" && [ -n "$group" ]; then
    [ "$group" = ralex ] || groupmod -n ralex "$group"
else
    groupadd --gid "$gid" ralex
fi
if getent passwd ralex >/dev/null && [ "$(id -u ralex)" != "$uid" ]; then
    usermod -l ralex-old ralex
fi
if user="$(getent passwd "$uid" | cut -d: -f1)" && [ -n "$user" ]; then
    old_home="$(getent passwd "$user" | cut -d: -f6)"
    [ "$user" = ralex ] || usermod -l ralex "$user"
    usermod -g ralex -d /home/ralex -s /bin/bash ralex
    if [ -d "$old_home" ] && [ "$old_home" != /home/ralex ]; then mv "$old_home" /home/ralex; fi
else
    useradd --uid "$uid" --gid ralex --home-dir /home/ralex --shell /bin/bash ralex
fi
install -d -o ralex -g ralex -m 0755 /home/ralex /workspace \
    /home/ralex/.config /home/ralex/.config/opencode \
    /home/ralex/.local /home/ralex/.local/share /home/ralex/.local/share/opencode \
    /home/ralex/.local/state /home/ralex/.local/state/opencode \
    /home/ralex/.cache /home/ralex/.cache/opencode
chown -R ralex:ralex /home/ralex
[ "$(id -u ralex):$(id -g ralex)" = "$uid:$gid" ]
