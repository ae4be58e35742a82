#!/usr/bin/env python3
"""Benchmark: `agentry validate` from a commit against PyYAML's C loader parsing the same files.

Generates an agent repository with N agents, each with its own harness, model, environment, skill
and instruction file, commits it with git, then times in the same run:

  agentry   `agentry validate --repo R -o json` (a whole process: load from the object database,
            parse, validate, cross-check, report)
  baseline  PyYAML's CSafeLoader parsing every YAML file and SKILL.md front matter from the work
            tree, in-process (interpreter start-up excluded, which favours the baseline)

and prints the ratio agentry / baseline (target <= 1.0). Best of --repeat runs each.

    python3 bench/validate_bench.py --agentry .build/release/agentry --agents 10000
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import yaml

AGENT = """apiVersion: agentry/v1
kind: Agent
metadata:
  name: agent-{i}
  owner: team-{team}
  labels: {{tier: production, shard: "s{shard}"}}
spec:
  description: Agent number {i}; labels issues and answers questions for team {team}.
  instructions: {{file: agent-{i}/INSTRUCTIONS.md}}
  harness: harness-{r}
  model: model-{r}
  fallbackModels: [model-{j}]
  environment: env-{r}
  skills: [skill-{i}]
  secrets:
    - env: GITHUB_TOKEN
      ref: github/token-{i}
  env:
    LOG_LEVEL: info
  run: {{prompt: "Triage new issues for shard {shard}", timeout: 15m}}
  memory: {{path: memory/}}
  lifecycle: active
  deletionPolicy: retain
"""

HARNESS = """apiVersion: agentry/v1
kind: Harness
metadata:
  name: harness-{i}
spec:
  type: hermes
  version: "0.19.{i}"
  install:
    pip: ["hermes-agent==0.19.0"]
  command: ["hermes", "-z", "{{{{prompt}}}}", "--ignore-rules"]
  env:
    HERMES_HOME: "{{{{agent.home}}}}/.hermes"
  modelEnv:
    OPENAI_BASE_URL: "{{{{model.baseUrl}}}}"
    OPENAI_API_KEY: "{{{{model.apiKey}}}}"
  configFiles:
    - path: .hermes/config.yaml
      content: |
        model:
          provider: custom
          default: "{{{{model.name}}}}"
          base_url: "{{{{model.baseUrl}}}}"
  skillsDir: .hermes/skills
  stateDirs: [.hermes/memories]
  supports:
    apis: [chat-completions, messages]
"""

MODEL = """apiVersion: agentry/v1
kind: Model
metadata:
  name: model-{i}
spec:
  provider: openai-compatible
  name: llama-3.1-8b-instruct-{i}
  api: chat-completions
  baseUrl: http://10.0.2.2:8080/v1
  credentials: {{ref: local/key-{i}}}
  contextWindow: 131072
"""

ENVIRONMENT = """apiVersion: agentry/v1
kind: Environment
metadata:
  name: env-{i}
spec:
  base: debian-12
  packages:
    apt: [git, curl, jq]
  resources: {{cpus: 2, memory: 1Gi, disk: 8Gi}}
  network:
    egress: [api.github.com, "models-{shard}.internal:8080"]
"""

SKILL = """---
name: skill-{i}
description: Skill number {i}. Reads issues, applies one label, asks for reproduction steps. Use when triaging.
license: Apache-2.0
metadata:
  version: "1.{i}"
---

# Skill {i}

Steps for the agent to follow.
"""

INSTRUCTIONS = "# agent-{i}\n\nTriage new issues for shard {shard}. Be brief.\n"


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def generate(root, count, shared=None):
    """N agents, each with its own skill and instructions; each with its own harness, model and
    environment too, or (with `shared`) using one of `shared` of each."""
    resources = shared or count
    for i in range(count):
        values = dict(i=i, team=i % 50, shard=i % 16)
        write(f"{root}/agents/agent-{i}.yaml", AGENT.format(
            **values, r=i % resources, j=(i + 1) % resources))
        write(f"{root}/agents/agent-{i}/INSTRUCTIONS.md", INSTRUCTIONS.format(**values))
        write(f"{root}/skills/skill-{i}/SKILL.md", SKILL.format(**values))
    for i in range(resources):
        values = dict(i=i, shard=i % 16)
        write(f"{root}/harnesses/harness-{i}.yaml", HARNESS.format(**values))
        write(f"{root}/models/model-{i}.yaml", MODEL.format(**values))
        write(f"{root}/environments/env-{i}.yaml", ENVIRONMENT.format(**values))
    env = dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@localhost",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@localhost")
    subprocess.run(["git", "init", "-q", "-b", "main", root], check=True)
    subprocess.run(["git", "-C", root, "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", root, "-c", "gc.auto=0", "commit", "-q", "-m", "generated"], check=True, env=env)
    subprocess.run(["git", "-C", root, "gc", "-q"], check=True, env=env)


def parse_with_pyyaml(root):
    """The baseline: PyYAML's C loader parsing the same YAML (resources and SKILL.md front matter)."""
    loader = yaml.CSafeLoader
    documents = 0
    for folder, _, files in os.walk(root):
        if "/.git" in folder:
            continue
        for name in files:
            path = os.path.join(folder, name)
            if name.endswith(".yaml"):
                with open(path, "rb") as f:
                    documents += sum(1 for _ in yaml.load_all(f.read(), Loader=loader))
            elif name == "SKILL.md":
                with open(path, "rb") as f:
                    text = f.read()
                front = text.split(b"\n---", 1)[0][4:]
                yaml.load(front, Loader=loader)
                documents += 1
    return documents


def best_of(repeat, action):
    best = None
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        elapsed = time.perf_counter() - start
        best = elapsed if best is None else min(best, elapsed)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agentry", default=".build/release/agentry")
    parser.add_argument("--agents", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", help="generate into this folder and keep it")
    args = parser.parse_args()
    if not yaml.__with_libyaml__:
        sys.exit("PyYAML was built without libyaml: the baseline would not be the C loader")

    root = args.keep or tempfile.mkdtemp(prefix="agentry-bench-")
    try:
        if not os.path.exists(os.path.join(root, ".git")):
            started = time.perf_counter()
            generate(root, args.agents)
            print(f"generated {args.agents} agents ({6 * args.agents} files) in {time.perf_counter() - started:.1f}s")

        def run_agentry():
            result = subprocess.run([args.agentry, "validate", "--repo", root, "-o", "json"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            if result.returncode != 0:
                sys.exit(f"agentry validate failed ({result.returncode}):\n{result.stdout[:2000].decode()}"
                         f"{result.stderr[:2000].decode()}")

        documents = parse_with_pyyaml(root)  # warm the page cache for both sides
        run_agentry()
        ours = best_of(args.repeat, run_agentry)
        baseline = best_of(args.repeat, lambda: parse_with_pyyaml(root))
        print(f"documents parsed by the baseline: {documents}")
        print(f"agentry validate (from the commit): {ours:.3f}s")
        print(f"PyYAML CSafeLoader parse only:      {baseline:.3f}s")
        print(f"ratio agentry/baseline: {ours / baseline:.2f} (target <= 1.0)")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
