#!/usr/bin/env python3
"""Benchmark: a pull request's checks (validate, diff, plan) against a full validate, in one run.

Generates the repository of bench/validate_bench.py with N agents sharing --shared harnesses,
models and environments (each agent keeps its own skill and instruction file), adds a commit that
changes one agent file, and times each command as a whole `agentry` process:

  validate        `validate --no-cache`: every file read and parsed (the yardstick)
  diff, no cache  `diff --no-cache HEAD~1 HEAD`: the base in full, the head incrementally from it
  diff after validate
                  with a fresh parse cache: `validate` (timed too: it fills the cache), then
                  `diff HEAD~1 HEAD`, as a CI job runs them
  warm plan       `plan` after a further one-file commit, the parse cache warm and a state in which
                  every agent is applied

Targets (issue 12): diff with no cache <= 1.2x validate; diff after validate <= 0.15x; warm plan
<= 0.1x. Each figure is the best of --repeat runs (fresh cache and fresh commits for each).

    python3 bench/checks_bench.py --agentry .build/release/agentry --agents 10000 --shared 20
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from plan_bench import applied_fields, commit_one_change, seed_actual_state, timed  # noqa: E402
from validate_bench import generate  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agentry", default=".build/release/agentry")
    parser.add_argument("--agents", type=int, default=10000)
    parser.add_argument("--shared", type=int, default=20, help="harnesses, models and environments (0: one per agent)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    agentry = os.path.abspath(args.agentry)
    root = tempfile.mkdtemp(prefix="agentry-checks-bench-")
    scratch = tempfile.mkdtemp(prefix="agentry-checks-bench-state-")
    state, cache = os.path.join(scratch, "state"), os.path.join(scratch, "cache")
    env = dict(os.environ, AGENTRY_STATE_DIR=state, AGENTRY_CACHE_DIR=cache)
    repo = ["--repo", root, "-o", "json"]
    try:
        generate(root, args.agents, args.shared or None)
        commit_one_change(root, "base")

        def best(command):
            return min(timed(command, env)[0] for _ in range(args.repeat))

        validate = best([agentry, "validate", "--no-cache"] + repo)
        diff_cold = best([agentry, "diff", "--no-cache", "HEAD~1", "HEAD"] + repo)
        validate_filling, diff_warm = None, None
        for _ in range(args.repeat):
            shutil.rmtree(cache, ignore_errors=True)
            filling = timed([agentry, "validate"] + repo, env)[0]
            elapsed, output = timed([agentry, "diff", "HEAD~1", "HEAD"] + repo, env)
            if json.loads(output)["summary"]["update"] != 1:
                sys.exit("unexpected diff: " + output.decode()[:500])
            validate_filling = filling if validate_filling is None else min(validate_filling, filling)
            diff_warm = elapsed if diff_warm is None else min(diff_warm, elapsed)

        # A state in which every agent is applied (as apply records them), and a warm cache.
        _, plan_json = timed([agentry, "plan", "--empty-state"] + repo, env)
        timed([agentry, "kill", "agent-0", "--reason", "bench", "--repo", root], env)  # creates the state
        timed([agentry, "unkill", "agent-0", "--repo", root], env)
        head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], stdout=subprocess.PIPE, check=True)
        head = head.stdout.decode().strip()
        seed_actual_state(state, plan_json, head, applied_fields(agentry, root, state, plan_json, head, env))
        timed([agentry, "plan"] + repo, env)
        plan = None
        for serial in range(args.repeat):
            commit_one_change(root, serial)
            elapsed, output = timed([agentry, "plan"] + repo, env)
            actions = json.loads(output)["actions"]
            changed = [a for a in actions if a.get("fromRevision") != a.get("toRevision")]
            if len(actions) != args.agents or [a["agent"] for a in changed] != ["agent-7"] or \
                    [r["field"] for r in changed[0]["reasons"] if r["field"] != "machine"] != ["description"]:
                sys.exit(f"unexpected warm plan: {len(actions)} actions, changed: {json.dumps(changed[:3])[:1000]}")
            plan = elapsed if plan is None else min(plan, elapsed)

        print(f"agents: {args.agents}, sharing {args.shared or args.agents} harnesses, models and environments")
        print(f"validate (no cache):   {validate:.3f}s")
        print(f"diff, no cache:        {diff_cold:.3f}s  {diff_cold / validate:.2f}x validate (target <= 1.2)")
        print(f"validate, filling:     {validate_filling:.3f}s  {validate_filling / validate:.2f}x validate")
        print(f"diff after validate:   {diff_warm:.3f}s  {diff_warm / validate:.2f}x validate (target <= 0.15)")
        print(f"warm plan (one file):  {plan:.3f}s  {plan / validate:.2f}x validate (target <= 0.10)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
