#!/usr/bin/env python3
"""Benchmark: committing run records to the history branch, in one run.

  agentry   `agentry history-bench`: N records through agentry's history writer (libgit2: blobs,
            an updated tree, a commit and a compare-and-swap branch move per record).
  git CLI   the same N records through git's plumbing, as a script without libgit2 would do it:
            hash-object for the files, mktree for each folder level (ls-tree to read the level
            it replaces), commit-tree and update-ref, one commit per record.

Both write into fresh repositories; the ratio is agentry's records per second over git's.
Target: at least 10.

    swift build -c release --product agentry && python3 bench/history_bench.py --agentry .build/release/agentry
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

ENV = dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@localhost", GIT_COMMITTER_NAME="bench",
           GIT_COMMITTER_EMAIL="bench@localhost", GIT_CONFIG_NOSYSTEM="1", HOME="/nonexistent")


def git(repo, *args, input=None):
    result = subprocess.run(["git", "-C", repo, *args], input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    if result.returncode != 0:
        sys.exit(f"git {' '.join(args)} failed: {result.stderr.decode()}")
    return result.stdout.decode()


def record(index):
    return f'formatVersion: 1\nrunId: "run-{index:06d}"\nagent: "bench"\nexitStatus: 0\n'


def level(repo, parent_tree, path):
    """The entries of the tree at `path` in `parent_tree` (empty when there is none)."""
    if parent_tree is None:
        return {}
    result = subprocess.run(["git", "-C", repo, "ls-tree", f"{parent_tree}:{path}" if path else parent_tree],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=ENV)
    entries = {}
    for line in result.stdout.decode().splitlines():
        meta, name = line.split("\t", 1)
        entries[name] = meta
    return entries


def mktree(repo, entries):
    text = "".join(f"{meta}\t{name}\n" for name, meta in sorted(entries.items()))
    return git(repo, "mktree", input=text.encode()).strip()


def git_cli(repo, records, agents):
    ref = "refs/heads/agentry/history"
    tip = None
    for index in range(records):
        agent = f"agent-{index % agents}"
        run = f"run-{index:06d}"
        with tempfile.TemporaryDirectory() as scratch:
            paths = []
            for name, text in (("record.yaml", record(index)), ("log.txt", f"log line of run {index}\n")):
                with open(f"{scratch}/{name}", "w") as handle:
                    handle.write(text)
                paths.append(f"{scratch}/{name}")
            record_blob, log_blob = git(repo, "hash-object", "-w", *paths).split()
        run_tree = mktree(repo, {"log.txt": f"100644 blob {log_blob}", "record.yaml": f"100644 blob {record_blob}"})
        base = f"{tip}^{{tree}}" if tip else None
        agent_entries = level(repo, base, f"runs/{agent}")
        agent_entries[run] = f"040000 tree {run_tree}"
        runs_entries = level(repo, base, "runs")
        runs_entries[agent] = f"040000 tree {mktree(repo, agent_entries)}"
        root_entries = level(repo, base, "")
        root_entries["runs"] = f"040000 tree {mktree(repo, runs_entries)}"
        root = mktree(repo, root_entries)
        parents = ["-p", tip] if tip else []
        commit = git(repo, "commit-tree", root, *parents, "-m", f"run {index}").strip()
        git(repo, "update-ref", ref, commit, *([tip] if tip else []))
        tip = commit


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--agentry", default=".build/release/agentry")
    parser.add_argument("--records", type=int, default=500)
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--dir", default=None, help="where the two repositories go (default: the system temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as root:
        ours, theirs = f"{root}/agentry", f"{root}/git"
        for repo in (ours, theirs):
            subprocess.run(["git", "init", "-q", repo], check=True, env=ENV)
        start = time.perf_counter()
        subprocess.run([args.agentry, "history-bench", "--repo", ours, "--records", str(args.records),
                        "--agents", str(args.agents)], check=True, stdout=subprocess.DEVNULL)
        agentry_seconds = time.perf_counter() - start
        start = time.perf_counter()
        git_cli(theirs, args.records, args.agents)
        git_seconds = time.perf_counter() - start
        for repo in (ours, theirs):
            count = int(git(repo, "rev-list", "--count", "agentry/history"))
            files = len(git(repo, "ls-tree", "-r", "--name-only", "agentry/history").split())
            if count != args.records or files != 2 * args.records:
                sys.exit(f"{repo}: {count} commits and {files} files, expected {args.records} and {2 * args.records}")
            git(repo, "fsck", "--strict", "--no-dangling")
        ours_rate, git_rate = args.records / agentry_seconds, args.records / git_seconds
        print(f"records:       {args.records} (one commit each, {args.agents} agents)")
        print(f"agentry:       {agentry_seconds:.2f} s  ({ours_rate:.0f} records/s, whole process)")
        print(f"git CLI:       {git_seconds:.2f} s  ({git_rate:.0f} records/s)")
        print(f"ratio:         {ours_rate / git_rate:.1f}x (target >= 10)")


if __name__ == "__main__":
    main()
