#!/usr/bin/env bash
# Installs agentry the way a release is installed: `agentry` and the guest agent `agentry-guest`
# side by side in PREFIX/bin (agentry finds the guest agent beside its own executable), and the
# systemd unit of `agentry serve` in PREFIX/lib/systemd/system (enable it with
# `systemctl enable --now agentry` once /etc/agentry/serve.env names the repository).
#
#   reconciler/install.sh [--prefix DIR] [--from DIR]
#
# --prefix: where to install (default /usr/local). --from: a folder holding already built
# `agentry` and `agentry-guest` (default: build them here with `swift build -c release`).
set -euo pipefail

prefix=/usr/local
from=
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix=${2:?--prefix needs a folder}; shift 2 ;;
        --from) from=${2:?--from needs a folder}; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

if [ -z "$from" ]; then
    root=$(cd "$(dirname "$0")/.." && pwd)
    (cd "$root" && swift build -c release --product agentry && swift build -c release --product agentry-guest)
    from=$(cd "$root" && swift build -c release --show-bin-path)
fi
for binary in agentry agentry-guest; do
    if [ ! -x "$from/$binary" ]; then
        echo "install.sh: $from/$binary is missing or not executable" >&2
        exit 1
    fi
done
install -d "$prefix/bin"
install -m 0755 "$from/agentry" "$prefix/bin/agentry"
install -m 0755 "$from/agentry-guest" "$prefix/bin/agentry-guest"
unit_dir="$prefix/lib/systemd/system"
install -d "$unit_dir"
sed "s|@BINDIR@|$prefix/bin|g" "$(dirname "$0")/systemd/agentry.service" > "$unit_dir/agentry.service.new"
chmod 0644 "$unit_dir/agentry.service.new"
mv "$unit_dir/agentry.service.new" "$unit_dir/agentry.service"
echo "installed agentry and agentry-guest in $prefix/bin, and the agentry.service unit in $unit_dir"
