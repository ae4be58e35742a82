#!/usr/bin/env python3
"""Benchmark: plan and diff on a large repository, cold against warm, in the same run.

Uses the repository of bench/validate_bench.py (N agents with their harnesses, models, environments,
skills and instruction files) and times, each as a whole `agentry` process:

  cold plan   `agentry plan --empty-state --no-cache`: every file read and parsed
  warm plan   `agentry plan` after a commit that changes one agent file, the parse cache warm and
              the state directory holding an actual state in which every agent is applied (seeded
              from the cold plan's revisions, as `apply` would record them)
  diff        `agentry diff HEAD~1 HEAD` for two commits that differ in one agent
  validate    `agentry validate --no-cache` of the whole repository

Targets: warm plan and diff each at most 10% of the cold plan. Warm figures are the best of
--repeat fresh one-file commits; cold and validate the best of --repeat runs.

    python3 bench/plan_bench.py --agentry .build/release/agentry --agents 10000
"""
import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from validate_bench import generate  # noqa: E402


def timed(command, env=None, ok=(0,)):
    start = time.perf_counter()
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    elapsed = time.perf_counter() - start
    if result.returncode not in ok:
        sys.exit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[:2000].decode()}{result.stderr[:2000].decode()}")
    return elapsed, result.stdout


def commit_one_change(root, serial):
    path = os.path.join(root, "agents", "agent-7.yaml")
    with open(path) as f:
        text = f.read()
    lines = [f"  description: Agent number 7, edit {serial} at {time.time_ns()}." if line.startswith("  description:")
             else line for line in text.split("\n")]
    text = "\n".join(lines)
    with open(path, "w") as f:
        f.write(text)
    env = dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@localhost",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@localhost")
    subprocess.run(["git", "-C", root, "-c", "gc.auto=0", "commit", "-q", "-am", f"edit {serial}"], check=True, env=env)


def seed_actual_state(state, plan_json, commit, fields=None):
    """Records every planned agent as applied, as `agentry apply` would; `fields` (by agent, from
    `applied_fields`) are the resolved fields apply records."""
    plan = json.loads(plan_json)
    db = sqlite3.connect(os.path.join(state, "state.sqlite"))
    db.executemany(
        "INSERT OR REPLACE INTO agents (name, applied_revision, applied_fields, applied_commit, lifecycle,"
        " deletion_policy, updated_at) VALUES (?, ?, ?, ?, 'active', 'retain', CURRENT_TIMESTAMP)",
        [(a["agent"], a["toRevision"], json.dumps((fields or {}).get(a["agent"], [])), commit)
         for a in plan["actions"]])
    db.commit()
    db.close()


def applied_fields(agentry, root, state, plan_json, commit, env):
    """Each agent's resolved fields, as apply records them: read from a plan against a state that
    has every agent applied at another revision with no fields (each reason is then a field)."""
    stale = json.loads(plan_json)
    for action in stale["actions"]:
        action["toRevision"] = "0" * 64
    seed_actual_state(state, json.dumps(stale), commit)
    _, output = timed([agentry, "plan", "--repo", root, "-o", "json"], env)
    # ("machine" is the drift of a machine that is not there, not a field.)
    return {a["agent"]: [[r["field"], r["new"]] for r in a["reasons"] if r["new"] is not None and r["field"] != "machine"]
            for a in json.loads(output)["actions"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agentry", default=".build/release/agentry")
    parser.add_argument("--agents", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", help="generate into this folder and keep it")
    args = parser.parse_args()
    agentry = os.path.abspath(args.agentry)

    root = args.keep or tempfile.mkdtemp(prefix="agentry-bench-")
    state = tempfile.mkdtemp(prefix="agentry-bench-state-")
    try:
        if not os.path.exists(os.path.join(root, ".git")):
            generate(root, args.agents)
        env = dict(os.environ, AGENTRY_STATE_DIR=state, AGENTRY_CACHE_DIR=os.path.join(state, "cache"))

        validate = min(
            timed([agentry, "validate", "--no-cache", "--repo", root, "-o", "json"])[0] for _ in range(args.repeat))

        cold = None
        plan_json = b""
        for _ in range(args.repeat):
            shutil.rmtree(state)
            os.makedirs(state)
            elapsed, plan_json = timed(
                [agentry, "plan", "--empty-state", "--no-cache", "--repo", root, "-o", "json"], env)
            cold = elapsed if cold is None else min(cold, elapsed)
        head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], stdout=subprocess.PIPE, check=True).stdout.decode().strip()
        # A state database made by agentry (plan never creates one): the kill switch, set and lifted.
        agent = json.loads(plan_json)["actions"][0]["agent"]
        timed([agentry, "kill", agent, "--reason", "bench", "--repo", root], env)
        timed([agentry, "unkill", agent, "--repo", root], env)
        seed_actual_state(state, plan_json, head)
        timed([agentry, "plan", "--repo", root, "-o", "json"], env)  # remembers the parse

        warm, diff = None, None
        for serial in range(args.repeat):
            commit_one_change(root, serial)
            elapsed, output = timed([agentry, "plan", "--repo", root, "-o", "json"], env)
            actions = json.loads(output)["actions"]
            # The seeded agents have no machines (plan measures them: each is planned to start), and
            # no applied fields: what must hold is that one agent's revision changed.
            changed = [a["agent"] for a in actions if a.get("fromRevision") != a.get("toRevision")]
            if len(actions) != args.agents or changed != ["agent-7"]:
                sys.exit(f"unexpected warm plan: {len(actions)} actions, revisions changed for {changed[:5]}")
            warm = elapsed if warm is None else min(warm, elapsed)
            elapsed, output = timed([agentry, "diff", "HEAD~1", "HEAD", "--repo", root, "-o", "json"], env)
            if json.loads(output)["summary"]["update"] != 1:
                sys.exit("unexpected diff")
            diff = elapsed if diff is None else min(diff, elapsed)

        print(f"agents: {args.agents}")
        print(f"validate (full, no cache):  {validate:.3f}s")
        print(f"cold plan:                  {cold:.3f}s")
        print(f"warm plan (one file):       {warm:.3f}s  ratio {warm / cold:.2f} of cold (target <= 0.10)")
        print(f"diff (one agent):           {diff:.3f}s  ratio {diff / cold:.2f} of cold, {diff / validate:.2f} of validate (target <= 0.10)")
    finally:
        shutil.rmtree(state, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
