#!/usr/bin/env python3
"""Benchmark: building a harness layer on the host against the same `pip install` run directly on
the host, in one run.

For each bundled harness (claude-code, codex, hermes: examples/quickstart/harnesses), from the local
wheelhouse that reconciler/install-deps.sh fills (served on loopback, as the tests do):

  pip on the host   `python3 -m venv` and `pip install` of the harness's pinned package, timed
  layer             `agentry apply` of a new paused agent on that harness (a paused agent gets its
                    layer and its disk but is not booted), the layer's build time as apply reports
                    it ("built the harness layer of NAME: ... in 12.3s"): unpacking nothing (the
                    debian-12 root is unpacked once per image), the installation in a chroot over
                    an overlay, staging and packing the ext4 layer

Target (issue 14): layer <= 1.3x pip on the host. Best of --repeat each (the layer removed before
each build). Needs root (chroot, debootstrap); the debian-12 image is built first, untimed.

    swift build -c release && python3 bench/layer_bench.py --agentry .build/release/agentry
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
APIS = {"claude-code": "messages", "codex": "responses", "hermes": "chat-completions"}
PINS = {"claude-code": "claude-agent-sdk==0.2.184", "codex": "openai-codex-cli-bin==0.163.0",
        "hermes": "hermes-agent==0.19.0"}


def run(command, env=None, cwd=None):
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout.decode()[-3000:]}{result.stderr.decode()[-3000:]}")
    return result.stdout.decode() + result.stderr.decode()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agentry", default=".build/release/agentry")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--harness", action="append", help="only these (default: all three)")
    args = parser.parse_args()
    agentry = os.path.abspath(args.agentry)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    wheelhouse = os.environ.get("AGENTRY_WHEELHOUSE") or os.path.join(cache, "agentry", "wheels")
    if not os.path.exists(os.path.join(wheelhouse, ".pins")):
        sys.exit(f"no wheelhouse at {wheelhouse}: run reconciler/install-deps.sh")
    index = subprocess.Popen([sys.executable, os.path.join(ROOT, "Tests/Fixtures/wheelhouse.py"), wheelhouse],
                             stdout=subprocess.PIPE)
    port = index.stdout.readline().decode().strip()
    pip_env = dict(os.environ, PIP_NO_INDEX="1", PIP_FIND_LINKS=f"http://127.0.0.1:{port}/")
    scratch = tempfile.mkdtemp(prefix="agentry-layer-bench-")
    state, repo = os.path.join(scratch, "state"), os.path.join(scratch, "repo")
    env = dict(pip_env, AGENTRY_STATE_DIR=state, AGENTRY_ACCELERATOR="tcg")
    try:
        os.makedirs(os.path.join(repo, "harnesses"))
        os.makedirs(os.path.join(repo, "environments"))
        os.makedirs(os.path.join(repo, "agents"))
        for name in PINS:
            shutil.copy(os.path.join(ROOT, "examples/quickstart/harnesses", name + ".yaml"),
                        os.path.join(repo, "harnesses"))
        with open(os.path.join(repo, "environments/bench.yaml"), "w") as f:
            f.write("apiVersion: agentry/v1\nkind: Environment\nmetadata: {name: bench}\n"
                    "spec: {base: debian-12, resources: {cpus: 1, memory: 512Mi, disk: 3Gi}}\n")
        os.makedirs(os.path.join(repo, "models"))
        for api in APIS.values():
            with open(os.path.join(repo, "models", api + ".yaml"), "w") as f:
                f.write(f"apiVersion: agentry/v1\nkind: Model\nmetadata: {{name: {api}}}\n"
                        f"spec: {{provider: local, name: m, api: {api}, baseUrl: 'http://127.0.0.1:9/v1'}}\n")
        run(["git", "init", "-q", repo])
        print("building the debian-12 image (untimed)...", flush=True)
        run([agentry, "image", "build", "debian-12"], env=env)

        serial = 0
        results = {}
        for harness in args.harness or list(PINS):
            host, layer = None, None
            for _ in range(args.repeat):
                venv = os.path.join(scratch, "venv")
                shutil.rmtree(venv, ignore_errors=True)
                start = time.perf_counter()
                run(["/usr/bin/python3", "-m", "venv", venv], env=pip_env)
                run([os.path.join(venv, "bin/pip"), "install", "-q", "--disable-pip-version-check", PINS[harness]],
                    env=pip_env)
                elapsed = time.perf_counter() - start
                host = elapsed if host is None else min(host, elapsed)

                layers = os.path.join(state, "images", "layers")
                for entry in os.listdir(layers) if os.path.isdir(layers) else []:
                    if not entry.startswith("."):
                        shutil.rmtree(os.path.join(layers, entry))
                serial += 1
                with open(os.path.join(repo, "agents", f"a{serial}.yaml"), "w") as f:
                    f.write(f"apiVersion: agentry/v1\nkind: Agent\nmetadata: {{name: a{serial}, owner: bench}}\n"
                            f"spec: {{harness: {harness}, model: {APIS[harness]}, environment: bench, lifecycle: paused, deletionPolicy: delete}}\n")
                run(["git", "-C", repo, "add", "-A"])
                run(["git", "-C", repo, "-c", "user.name=bench", "-c", "user.email=bench@example.org", "commit", "-qm", f"a{serial}"])
                output = run([agentry, "apply", "--auto-approve", "--repo", repo, "--log-level", "info"], env=env)
                found = re.search(rf"built the harness layer of {harness}: .* in (\S+)", output)
                if not found:
                    sys.exit(f"apply did not build the layer of {harness}:\n{output[-3000:]}")
                seconds = go_seconds(found.group(1))
                layer = seconds if layer is None else min(layer, seconds)
            results[harness] = (host, layer)
            print(f"{harness:12} pip on the host {host:6.1f}s   layer {layer:6.1f}s   {layer / host:.2f}x (target <= 1.3)",
                  flush=True)
    finally:
        index.kill()
        subprocess.run(["pkill", "-f", state], stderr=subprocess.DEVNULL)
        shutil.rmtree(scratch, ignore_errors=True)


def go_seconds(text):
    """4.1s, 2m3s, 850ms -> seconds."""
    total = 0.0
    for value, unit in re.findall(r"([\d.]+)(ms|h|m|s)", text):
        total += float(value) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


if __name__ == "__main__":
    main()
