#!/usr/bin/env python3
"""Benchmark: what `agentry run` adds over the harness command's own time, on a warm machine.

Both sides in one run, on one running microVM (TCG unless KVM works):

  harness alone   `agentry exec AGENT -- <the harness command>`: the cheapest way to run the same
                  command in the agent's machine from the host (process start, connect, exec,
                  output streamed, exit status).
  agentry run     `agentry run AGENT`: the same command, plus everything a run does: the desired
                  state checked and the machine ensured (apply's rules), configuration staged,
                  secrets folder, output folder emptied, artifacts and memory collected, the record
                  committed to git, the state database updated.

Overhead = median(run) - median(exec). Target <= 100 ms.

    swift build -c release && python3 bench/run_bench.py --agentry .build/release/agentry
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

COMMAND = ["/bin/sh", "-c", "mkdir -p out memory; echo \"hello $AGENTRY_AGENT\" | tee out/greeting.txt; date >> memory/log"]
FILES = {
    "harnesses/shell.yaml": """apiVersion: agentry/v1
kind: Harness
metadata: {name: shell}
spec:
  type: shell
  command: ["/bin/sh", "-c", "mkdir -p out memory; echo \\"hello $AGENTRY_AGENT\\" | tee out/greeting.txt; date >> memory/log"]
  supports: {apis: [chat-completions]}
""",
    "models/local.yaml": """apiVersion: agentry/v1
kind: Model
metadata: {name: local}
spec: {provider: local, name: m, api: chat-completions, baseUrl: 'http://127.0.0.1:8080/v1'}
""",
    "environments/tiny.yaml": """apiVersion: agentry/v1
kind: Environment
metadata: {name: tiny}
spec: {base: minimal, resources: {cpus: 1, memory: 256Mi, disk: 1Gi}}
""",
    "agents/bench.yaml": """apiVersion: agentry/v1
kind: Agent
metadata: {name: bench, owner: bench}
spec:
  instructions: "Benchmark."
  harness: shell
  model: local
  environment: tiny
  memory: {path: memory/, snapshot: true}
  deletionPolicy: delete
""",
}


def timed(command, env):
    start = time.perf_counter()
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr.decode()}")
    return elapsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--agentry", default=".build/release/agentry")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    agentry = os.path.abspath(args.agentry)
    with tempfile.TemporaryDirectory() as root:
        repo, state = f"{root}/repo", f"{root}/state"
        for path, text in FILES.items():
            os.makedirs(os.path.dirname(f"{repo}/{path}"), exist_ok=True)
            with open(f"{repo}/{path}", "w") as handle:
                handle.write(text)
        git = ["git", "-C", repo, "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
        subprocess.run(["git", "init", "-q", repo], check=True)
        subprocess.run(git + ["add", "-A"], check=True)
        subprocess.run(git + ["commit", "-q", "-m", "bench"], check=True)
        env = dict(os.environ, AGENTRY_STATE_DIR=state)
        try:
            timed([agentry, "apply", "--repo", repo], env)
            timed([agentry, "run", "bench", "--repo", repo], env)  # warm: first configuration push
            runs, execs = [], []
            for _ in range(args.rounds):
                execs.append(timed([agentry, "exec", "bench", "--"] + COMMAND, env))
                runs.append(timed([agentry, "run", "bench", "--repo", repo], env))
            count = subprocess.run(git + ["rev-list", "--count", "agentry/history", "--", "runs/"], stdout=subprocess.PIPE, check=True)
            if int(count.stdout) != args.rounds + 1:
                sys.exit(f"expected {args.rounds + 1} run records, found {count.stdout.decode().strip()}")
        finally:
            subprocess.run(["pkill", "-9", "-f", f"{state}/agents/"], stderr=subprocess.DEVNULL)
        run, alone = statistics.median(runs), statistics.median(execs)
        print(f"rounds:          {args.rounds}")
        print(f"harness alone:   {alone * 1000:.0f} ms median (agentry exec, best {min(execs) * 1000:.0f} ms)")
        print(f"agentry run:     {run * 1000:.0f} ms median (best {min(runs) * 1000:.0f} ms)")
        print(f"overhead:        {(run - alone) * 1000:.0f} ms (target <= 100 ms)")


if __name__ == "__main__":
    main()
