#!/usr/bin/env python3
"""Benchmark: microVMs, in one run.

  boot ratio   `agentry apply` of one new agent (repository load, plan, disk, QEMU start, guest
               boot, guest agent hello) against a bare `qemu-system-x86_64` boot of the same kernel
               and initramfs to its init (`rdinit=/bin/busybox -- poweroff -f`: the time QEMU takes
               to start, boot the kernel, start init and power off). Target <= 1.2.
  exec         round trip of `agentry exec AGENT -- true` on a running machine (whole process),
               best of 20. Target <= 50 ms.
  memory       host RSS of one idle machine's QEMU process.
  eight        eight agents applied at once, then each answering `exec -- true`.

    swift build && python3 bench/machine_bench.py --agentry .build/debug/agentry
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HARNESS = """apiVersion: agentry/v1
kind: Harness
metadata: {name: shell}
spec:
  type: shell
  command: ["/bin/sh", "-c", "echo {{prompt}}"]
  supports: {apis: [chat-completions]}
"""
MODEL = """apiVersion: agentry/v1
kind: Model
metadata: {name: local}
spec: {provider: local, name: m, api: chat-completions, baseUrl: 'http://127.0.0.1:8080/v1'}
"""
ENVIRONMENT = """apiVersion: agentry/v1
kind: Environment
metadata: {name: tiny}
spec: {base: minimal, resources: {cpus: 1, memory: 256Mi, disk: 1Gi}}
"""
AGENT = """apiVersion: agentry/v1
kind: Agent
metadata: {name: %s, owner: bench}
spec: {harness: shell, model: local, environment: tiny, deletionPolicy: delete}
"""


def run(command, env=None, check=True):
    start = time.perf_counter()
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    elapsed = time.perf_counter() - start
    if check and result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout.decode()}{result.stderr.decode()}")
    return elapsed, result


def repository(root, names):
    os.makedirs(f"{root}/agents", exist_ok=True)
    for folder, text in (("harnesses/shell.yaml", HARNESS), ("models/local.yaml", MODEL), ("environments/tiny.yaml", ENVIRONMENT)):
        os.makedirs(os.path.dirname(f"{root}/{folder}"), exist_ok=True)
        with open(f"{root}/{folder}", "w") as f:
            f.write(text)
    for name in names:
        with open(f"{root}/agents/{name}.yaml", "w") as f:
            f.write(AGENT % name)
    env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@localhost", GIT_COMMITTER_NAME="b",
               GIT_COMMITTER_EMAIL="b@localhost")
    if not os.path.exists(f"{root}/.git"):
        subprocess.run(["git", "init", "-q", "-b", "main", root], check=True)
    subprocess.run(["git", "-C", root, "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", root, "commit", "-q", "-m", "agents"], check=True, env=env)


def bare_boot(image, tsc):
    # The same kernel parameters agentry passes (tsc_early_khz included: without it a TCG boot can
    # hang in early boot), and init powering off at once.
    command = ["timeout", "120", "qemu-system-x86_64", "-M", "microvm", "-accel", "tcg,tb-size=64", "-cpu", "max",
               "-m", "256M", "-smp", "1", "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
               "-kernel", f"{image}/vmlinuz", "-initrd", f"{image}/initrd.img",
               "-append", f"console=ttyS0 reboot=t panic=-1 quiet {tsc} rdinit=/bin/busybox -- poweroff -f"]
    return run(command)[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agentry", default=".build/debug/agentry")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    agentry = os.path.abspath(args.agentry)
    state = tempfile.mkdtemp(prefix="agentry-mbench-")
    env = dict(os.environ, AGENTRY_STATE_DIR=state, AGENTRY_ACCELERATOR="tcg")
    try:
        _, built = run([agentry, "image", "build", "minimal"], env)
        image = built.stdout.decode().strip()

        ours = None
        for attempt in range(args.repeat):
            root = tempfile.mkdtemp(prefix="agentry-mbench-repo-")
            repository(root, [f"solo{attempt}"])
            elapsed, _ = run([agentry, "apply", "--repo", root], env)
            ours = elapsed if ours is None else min(ours, elapsed)
            last_root, last_agent = root, f"solo{attempt}"

        exec_times = [run([agentry, "exec", last_agent, "--", "true"], env)[0] for _ in range(20)]
        pid = open(f"{state}/agents/{last_agent}/vm.pid").read().strip()
        cmdline = open(f"/proc/{pid}/cmdline").read().replace("\0", " ")
        tsc = next((word for word in cmdline.split() if word.startswith("tsc_early_khz=")), "")
        bare = min(bare_boot(image, tsc) for _ in range(args.repeat))
        time.sleep(2)
        rss = int(open(f"/proc/{pid}/status").read().split("VmRSS:")[1].split()[0]) // 1024

        root = tempfile.mkdtemp(prefix="agentry-mbench-eight-")
        names = [f"agent{i}" for i in range(8)]
        repository(root, names)
        eight, _ = run([agentry, "apply", "--repo", root], env)
        answering = sum(1 for name in names if run([agentry, "exec", name, "--", "true"], env, check=False)[1].returncode == 0)

        print(f"bare qemu boot to init (TCG):        {bare:.2f}s")
        print(f"agentry apply, one agent to ready:   {ours:.2f}s  ratio {ours / bare:.2f} (target <= 1.2)")
        print(f"agentry exec -- true round trip:     {min(exec_times) * 1000:.0f} ms best, {sorted(exec_times)[10] * 1000:.0f} ms median (target <= 50 ms)")
        print(f"host memory per idle machine (RSS):  {rss} MiB")
        print(f"eight agents applied at once:        {eight:.2f}s, {answering}/8 answering exec")
    finally:
        subprocess.run(["pkill", "-9", "-f", f"{state}/agents/"])
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
