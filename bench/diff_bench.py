#!/usr/bin/env python3
"""Benchmark: `agentry diff HEAD~1 HEAD` with no state directory (no parse cache), against a full
`agentry validate` of the same repository, in the same run.

Uses the repository of bench/validate_bench.py (N agents with their harnesses, models,
environments, skills and instruction files) and one more commit that changes one agent file.
Without a cache, diff loads the base in full and the head incrementally from it. Best of --repeat.
Target (issue 12): diff at most 1.2x validate.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from validate_bench import generate  # noqa: E402


def best(command, env, repeat):
    fastest = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = subprocess.run(command, env=env, capture_output=True)
        elapsed = time.perf_counter() - started
        if result.returncode not in (0,):
            sys.exit(f"{command[1]} failed ({result.returncode}): {result.stderr.decode()[-500:]}")
        fastest = elapsed if fastest is None else min(fastest, elapsed)
    return fastest


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agentry", default=".build/release/agentry")
    parser.add_argument("--agents", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    agentry = os.path.abspath(args.agentry)
    root = tempfile.mkdtemp(prefix="agentry-diff-bench-")
    try:
        generate(root, args.agents)
        with open(os.path.join(root, "agents", "agent-7.yaml"), "a") as handle:
            handle.write("\n# touched\n")
        subprocess.run(
            ["git", "-C", root, "-c", "user.email=bench@localhost", "-c", "user.name=bench", "commit", "-qam", "one"],
            check=True)
        env = {key: value for key, value in os.environ.items() if key != "AGENTRY_STATE_DIR"}
        validate = best([agentry, "validate", "--repo", root, "-o", "json"], env, args.repeat)
        diff = best([agentry, "diff", "HEAD~1", "HEAD", "--repo", root, "-o", "json"], env, args.repeat)
        print(f"validate (full):        {validate:.3f}s")
        print(f"diff (no cache):        {diff:.3f}s  ratio {diff / validate:.2f} of validate (target <= 1.2)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
