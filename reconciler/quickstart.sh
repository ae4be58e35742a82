#!/usr/bin/env bash
# The quickstart's first command: install what is missing, build agentry, and run the main job on
# the bundled example: validate examples/quickstart, put it in a git repository, build the guest
# images and apply it (one microVM per active agent, the Claude Code harness installed on the host
# into its layer), run its shell-harness agent `hello`, and print the run's record from the history
# branch in git. With ANTHROPIC_API_KEY set, also run `triage` on Claude Code (the key goes into
# agentry's secret store on the host; the machine only ever sees a run token for the gateway).
#
# State goes to $AGENTRY_STATE_DIR (default: .agentry-quickstart in this checkout). The machines
# keep running afterwards; stop them with `agentry kill AGENT --reason done` or by deleting the
# agents from the repository and applying again.
set -euo pipefail
cd "$(dirname "$0")/.."

reconciler/install-deps.sh
swift build -c release --product agentry
swift build -c release --product agentry-guest
agentry=.build/release/agentry
export AGENTRY_STATE_DIR=${AGENTRY_STATE_DIR:-$PWD/.agentry-quickstart}

echo "== agentry validate --dir examples/quickstart"
"$agentry" validate --dir examples/quickstart

# The example as a git repository, read from the commit (no work tree needed). It is kept beside
# the state, so later `agentry plan/apply --repo` calls can use it.
repository="$AGENTRY_STATE_DIR/quickstart-repo"
mkdir -p "$repository"
rsync -a --delete --exclude .git examples/quickstart/ "$repository"/ 2>/dev/null || cp -R examples/quickstart/. "$repository"
git -C "$repository" init -q -b main 2>/dev/null || true
git -C "$repository" add -A
git -C "$repository" -c user.name=quickstart -c user.email=quickstart@localhost commit -q -m "Quickstart agents" || true
echo "== agentry validate --repo $repository"
"$agentry" validate --repo "$repository"

echo "== agentry image build minimal"
"$agentry" image build minimal
echo "== agentry apply --repo $repository"
"$agentry" apply --repo "$repository"
echo "== agentry status --repo $repository"
"$agentry" status --repo "$repository"

echo "== agentry run hello --repo $repository"
"$agentry" run hello --repo "$repository"
echo "== the run, recorded in git: git log -1 --stat agentry/history"
git -C "$repository" log -1 --stat agentry/history
run_id=$(git -C "$repository" log -1 --format=%s agentry/history | cut -d' ' -f3 | tr -d ':')
echo "== agentry show $run_id"
"$agentry" show "$run_id" --repo "$repository"

if [ -n "${ANTHROPIC_API_KEY:-}" ]; then
    echo "== agentry secret set anthropic/api-key (from \$ANTHROPIC_API_KEY)"
    printf '%s\n' "$ANTHROPIC_API_KEY" | "$agentry" secret set anthropic/api-key
    echo "== agentry run triage --repo $repository (Claude Code, through the model gateway)"
    "$agentry" run triage --repo "$repository" --prompt "Say in one line what you would do first."
else
    echo "== set ANTHROPIC_API_KEY and run this again to run triage on Claude Code as well"
fi
