#!/bin/bash
# Image build step: install OpenCode's standalone binary for this architecture from the lock
# (services/opencode/opencode.lock). Usage: install-opencode.sh LOCK [VERSION]; VERSION empty = the
# lock's default for the architecture. One tarball is fetched with `npm pack`, its sha512 must equal
# the lock's, and the binary must report the version asked for.
set -euo pipefail
lock="$1"; version="${2:-}"
arch="${TARGETARCH:-$(dpkg --print-architecture)}"
case "$arch" in
    amd64) pkg=opencode-linux-x64
           # OpenCode's own installer picks the baseline build on x86-64 CPUs without AVX2.
           grep -qw avx2 /proc/cpuinfo || pkg=opencode-linux-x64-baseline ;;
    arm64) pkg=opencode-linux-arm64 ;;
    *) echo "OpenCode ships Linux binaries for amd64 (x64) and arm64 only, not '$arch'" >&2; exit 1 ;;
esac
if [ -z "$version" ]; then
    version="$(awk -v a="$arch" '$1 == "default" && $2 == a { print $3 }' "$lock")"
fi
want="$(awk -v k="$pkg@$version" '$1 == k { print $2 }' "$lock")"
if [ -z "$want" ]; then
    echo "OpenCode $version for $arch ($pkg) is not in services/opencode/opencode.lock." >&2
    echo "Locked: $(awk '$1 ~ /@/ { print $1 }' "$lock" | tr '\n' ' ')" >&2
    echo "Fix: set RALEX_OPENCODE_VERSION in .env to a locked release (or leave it empty for the default)," >&2
    echo "or add the line: $pkg@$version \$(npm view $pkg@$version dist.integrity)" >&2
    exit 1
fi
work="$(mktemp -d)"
cd "$work"
tgz="$(npm pack --silent --no-fund --no-audit --no-update-notifier "$pkg@$version" | tail -n 1)"
got="sha512-$(node -e 'process.stdout.write(require("crypto").createHash("sha512").update(require("fs").readFileSync(process.argv[1])).digest("base64"))' "$tgz")"
if [ "$got" != "$want" ]; then
    echo "$pkg@$version: tarball integrity $got does not match the lock's $want" >&2
    exit 1
fi
tar -xzf "$tgz" package/bin/opencode
install -m 0755 package/bin/opencode /usr/local/bin/opencode
cd /; rm -rf "$work" "${HOME:?}/.npm"
said="$(opencode --version)"
if [ "$said" != "$version" ]; then
    echo "opencode --version says '$said', expected $version" >&2
    exit 1
fi
echo "OpenCode $version ($pkg, $want)"
