#!/usr/bin/env bash
# Pull-request check for any CI (copy it into the agent repository): validate the head commit (annotations), diff it against the base,
# plan it against the actual state when a state directory is available, and write the Markdown
# comment to post. Exit status: 0 valid (changes or not), 1 invalid or refused.
#
#   reconciler/ci/pr-check.sh BASE_SHA HEAD_SHA [COMMENT_FILE] [--path DIR]
#
# Environment: AGENTRY (the binary, default: agentry on PATH), AGENTRY_STATE_DIR (optional: plan
# against the actual state kept there; without it only the diff is shown), VALIDATE_FORMAT
# (github for GitHub Actions annotations, text elsewhere; default: github when GITHUB_ACTIONS=true).
set -uo pipefail

base=${1:?usage: pr-check.sh BASE HEAD [COMMENT_FILE] [--path DIR]}
head=${2:?usage: pr-check.sh BASE HEAD [COMMENT_FILE] [--path DIR]}
comment=${3:-agentry-comment.md}
shift $(( $# < 3 ? $# : 3 ))
agentry=${AGENTRY:-agentry}
# The checkout is the repository to read (not the one the state applied, agentry's default).
export AGENTRY_REPO=${AGENTRY_REPO:-$PWD}
format=${VALIDATE_FORMAT:-$([ "${GITHUB_ACTIONS:-}" = true ] && echo github || echo text)}

status=0
"$agentry" validate --ref "$head" -o "$format" "$@" || status=$?
if [ "$status" -ge 2 ]; then exit "$status"; fi

{
    if [ "$status" -ne 0 ]; then
        echo "### agentry: the repository is invalid at \`${head:0:12}\`"
        echo
        echo '```'
        "$agentry" validate --ref "$head" "$@"
        echo '```'
    else
        "$agentry" diff "$base" "$head" -o markdown "$@"
        if [ -n "${AGENTRY_STATE_DIR:-}" ] && [ -e "$AGENTRY_STATE_DIR/state.sqlite" ]; then
            echo
            "$agentry" plan --ref "$head" -o markdown "$@" || status=1
        fi
    fi
} > "$comment"
echo "agentry: wrote $comment" >&2
exit "$status"
