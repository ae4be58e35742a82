#!/usr/bin/env bash
# The quickstart's first command: install what is missing, build agentry, and run the main job on
# the bundled example: validate examples/quickstart from a folder and from a git commit.
set -euo pipefail
cd "$(dirname "$0")/.."

reconciler/install-deps.sh
swift build -c release --product agentry
agentry=.build/release/agentry

echo "== agentry validate --dir examples/quickstart"
"$agentry" validate --dir examples/quickstart

# The same example as a git repository, read from the commit (no work tree needed).
repository=$(mktemp -d)
trap 'rm -rf "$repository"' EXIT
cp -R examples/quickstart/. "$repository"
git -C "$repository" init -q -b main
git -C "$repository" add -A
git -C "$repository" -c user.name=quickstart -c user.email=quickstart@localhost commit -q -m "Quickstart agents"
echo "== agentry validate --repo <a git copy of examples/quickstart>"
"$agentry" validate --repo "$repository"
