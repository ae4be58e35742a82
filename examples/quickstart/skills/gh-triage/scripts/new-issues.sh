#!/bin/sh
# Lists issues opened in the last day in the repository named by $1.
set -eu
since=$(date -u -d '1 day ago' +%FT%TZ)
curl -fsS -H "Authorization: Bearer $GITHUB_TOKEN" \
  "https://api.github.com/repos/$1/issues?since=$since&state=open"
