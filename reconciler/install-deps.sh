#!/usr/bin/env bash
# Installs what agentry needs to build, test and run on Debian 12, and nothing when it is present.
# Idempotent: safe to run on every CI job and before every quickstart.
set -euo pipefail

# Debian packages: libgit2 (git access), libyaml/libsqlite3 headers (YAML, state store), libsodium
# (the secret store's encryption), git (tests),
# python3 with PyYAML and jsonschema (the schema agreement test and the benchmark baseline), QEMU and
# qemu-img (the microVMs), busybox-static and debootstrap (the guest images), socat (joins a guest's
# connections to its egress proxy and model gateway), procps (pgrep/pkill in tests), curl (the
# gateway's tests speak HTTP over its unix socket), python3-pip (downloads the harnesses' wheels).
packages=(libgit2-dev libyaml-dev libsqlite3-dev libsodium-dev pkg-config git python3 python3-pip python3-yaml python3-jsonschema
    qemu-system-x86 qemu-utils busybox-static procps e2fsprogs binutils debootstrap socat curl)

missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done

# The guest image downloads Debian's cloud kernel package: the apt lists must know it.
lists_ok=true
apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1 || lists_ok=false

if [ "${#missing[@]}" -gt 0 ] || [ "$lists_ok" = false ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "agentry: installing ${missing[*]}" >&2
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

# The python3 on PATH may not be Debian's (pyenv, a virtualenv): make sure it has the modules too.
if ! python3 -c 'import yaml, jsonschema; assert yaml.__with_libyaml__' 2>/dev/null; then
    echo "agentry: installing PyYAML and jsonschema for $(command -v python3)" >&2
    python3 -m pip install --quiet --disable-pip-version-check pyyaml jsonschema
fi

command -v swift >/dev/null || {
    echo "agentry: the Swift toolchain (6.0 or later) is not on PATH; install it from swift.org first" >&2
    exit 1
}

# The bundled harnesses' wheels (Claude Code, Codex, Hermes: about 330 MB), with their dependencies,
# into the wheelhouse the end-to-end tests install them from on loopback. Done once per pin list.
wheelhouse="${AGENTRY_WHEELHOUSE:-${XDG_CACHE_HOME:-$HOME/.cache}/agentry/wheels}"
pins="$(dirname "$0")/harness-wheels.txt"
if ! cmp -s "$pins" "$wheelhouse/.pins" 2>/dev/null; then
    echo "agentry: downloading the bundled harnesses' wheels into $wheelhouse" >&2
    mkdir -p "$wheelhouse"
    python3 -m pip download --quiet --disable-pip-version-check --only-binary=:all: --dest "$wheelhouse" \
        -r "$pins"
    cp "$pins" "$wheelhouse/.pins"
fi
