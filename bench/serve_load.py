#!/usr/bin/env python3
"""Load test of `agentry serve`: bounded, on loopback, against real microVMs (TCG).

Setup: a temporary agent repository (git, branch main) with --agents shell-harness agents (the
harness runs `echo "did $PROMPT"`), a temporary state directory, `agentry apply`, a run token, a
read token and a webhook secret; then `agentry serve --listen 127.0.0.1:0 --interval 0
--max-concurrent-runs 4 --webhook-secret github/webhook`.

  load          --runs POST /v1/agents/{name}/runs from --clients clients (each on its own
                kept-alive connection; asyncio in --client-processes processes, each request in
                one write), spread over the agents, each with an Idempotency-Key; half
                of the keys are sent twice (one half of those right after the first send, usually
                at the same time from another client; the other half later). Accept latency is the
                time to the 201/200 answer; 429s are retried after Retry-After and counted apart.
  streams       meanwhile --streams clients follow GET /v1/runs/{id}/events (SSE) on accepted runs
                spread over the queue, each until `event: end`.
  correctness   every accepted run reaches a final status; each key gave one run (one 201, the
                rest 200 with the same id); history (`runs/<agent>/<id>/record.yaml` on
                agentry/history) gained exactly one record per service run, one per succeeded run,
                and no recordId twice; the records' startedAt/endedAt never overlap for one agent
                and never exceed --max-concurrent-runs at once; /metrics, scraped every 0.5 s,
                never shows more active runs than that.
  overhead      --rounds sequential `agentry run AGENT` (whole processes, the service idle) against
                --rounds sequential API runs of the same agent (POST, then GET every 20 ms until
                final): the ratio of the medians.
  push to Ready a commit changing one agent's instructions, then a signed GitHub push webhook: the
                time until GET /v1/agents/{name} shows appliedRevision == desiredRevision and
                Ready True observing the new commit. Then the service is started again with
                `--interval 10s` (no webhook) and the same is measured for a commit made right
                after its first pass (so about one whole interval: the worst case).

The service and every machine of the state directory are stopped at the end, whatever happens.
Exit status 1 when a correctness check fails.

    python3 bench/serve_load.py --agentry .build/release/agentry
    python3 bench/serve_load.py --agentry /tmp/serve-bench-bin/agentry --runs 40 --clients 8 --streams 10 --agents 2
"""
import argparse
import collections
import datetime
import hashlib
import hmac
import http.client
import json
import multiprocessing
import multiprocessing.connection
import os
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

def load_process(host, port, token, agents, clients, jobs, taken, results, ready, go, start):
    """One of the load's client processes: `clients` connections kept alive, driven by one asyncio
    loop, each taking the next send from `jobs` (shared, in order: `taken` counts those taken) and
    putting a record per send in `results`.

    Threads with http.client, as before, put client artifacts into the figures: http.client writes
    a request's head and body apart, and between the two writes the thread queued for the
    interpreter lock behind the bench's other 150 threads, so the body reached the service up to
    70 ms after the head (its clock starts at the head); and an answer waited for the lock again.
    Here a request goes in one write, as curl and most HTTP clients send it. Records go to the
    bench through a pipe written from the loop itself (a multiprocessing.Queue pickles and writes
    on a feeder thread of its own, which takes the interpreter lock from the loop for up to the
    5 ms switch interval at a time while answers wait to be read)."""
    import asyncio

    def next_job():
        with taken.get_lock():
            if taken.value >= len(jobs):
                return None
            taken.value += 1
            return jobs[taken.value - 1]

    async def post(connection, agent, body, key):
        reader, writer = connection
        request = (f"POST /v1/agents/{agent}/runs HTTP/1.1\r\nHost: {host}:{port}\r\n"
                   f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                   f"Idempotency-Key: {key}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        data = await reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, data

    async def client():
        connection = await asyncio.open_connection(host, port)
        ready.put(None)
        while not go.is_set():
            await asyncio.sleep(0.001)
        while (job := next_job()) is not None:
            i, send = job
            agent = agents[i % len(agents)]
            body = json.dumps({"prompt": f"p-{i}"}).encode()
            record = {"i": i, "send": send, "agent": agent, "throttled": 0, "errors": []}
            for attempt in range(30):
                if connection is None:
                    connection = await asyncio.open_connection(host, port)
                t0 = time.perf_counter()
                try:
                    status, headers, data = await post(connection, agent, body, f"load-{i}")
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as error:
                    record["errors"].append(f"{type(error).__name__}: {error}")
                    connection[1].close()
                    connection = None
                    await asyncio.sleep(0.2)
                    continue
                t1 = time.perf_counter()
                if status == 429:
                    record["throttled"] += 1
                    await asyncio.sleep(min(30.0, float(headers.get("retry-after", "1"))))
                    continue
                # (perf_counter is CLOCK_MONOTONIC here: the same clock in every process.)
                record.update(status=status, latency=t1 - t0, at=t1 - start.value, body=data[:500])
                if status in (200, 201):
                    record["id"] = json.loads(data)["id"]
                    record["location"] = headers.get("location")
                if headers.get("connection", "").lower() == "close":
                    connection[1].close()
                    connection = None
                break
            else:
                record["status"] = None
            results.send(record)
        if connection is not None:
            connection[1].close()

    async def main():
        await asyncio.gather(*(client() for _ in range(clients)))

    asyncio.run(main())


FINAL = {"succeeded", "failed", "timedOut", "cancelled", "interrupted"}
WEBHOOK_SECRET = "serve-load-bench-webhook-secret"

HARNESS = """apiVersion: agentry/v1
kind: Harness
metadata: {name: shell}
spec:
  type: shell
  command: ["/bin/sh", "-c", "echo \\"did $PROMPT\\""]
  env: {PROMPT: "{{prompt}}"}
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
spec: {base: minimal, resources: {cpus: 1, memory: 192Mi, disk: 256Mi}}
"""
AGENT = """apiVersion: agentry/v1
kind: Agent
metadata: {name: %s, owner: bench}
spec:
  instructions: "%s"
  harness: shell
  model: local
  environment: tiny
  run: {prompt: "hello", timeout: 2m}
  deletionPolicy: delete
"""

failures = []


def check(ok, what, detail=""):
    print(f"{'PASS' if ok else 'FAIL'}: {what}" + (f" ({detail})" if detail and not ok else ""), flush=True)
    if not ok:
        failures.append(what)
    return ok


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values, fraction):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(fraction * len(ordered) + 0.5)) - 1))]


def histogram_quantiles(metrics, name, match, fractions):
    """Quantiles of a Prometheus histogram (the series whose labels contain every string of `match`,
    summed), interpolated within buckets as histogram_quantile does; and the count."""
    buckets = collections.Counter()
    for line in metrics.splitlines():
        if not line.startswith(name + "_bucket{") or not all(m in line for m in match):
            continue
        labels, value = line.rsplit(" ", 1)
        bound = labels.split('le="', 1)[1].split('"', 1)[0]
        buckets[float("inf") if bound == "+Inf" else float(bound)] += float(value)
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0
    answers = []
    for fraction in fractions:
        rank, lower, below = fraction * total, 0.0, 0.0
        answer = float("nan")
        for bound in bounds:
            if buckets[bound] >= rank and total:
                if bound == float("inf"):
                    answer = lower
                else:
                    inside = buckets[bound] - below
                    answer = lower + (bound - lower) * ((rank - below) / inside if inside else 1)
                break
            lower, below = bound, buckets[bound]
        answers.append(answer)
    return answers, int(total)


class Bench:
    def __init__(self, args):
        self.args = args
        self.agentry = os.path.abspath(args.agentry)
        self.root = tempfile.mkdtemp(prefix="agentry-serve-load-")
        self.repo, self.state = f"{self.root}/repo", f"{self.root}/state"
        self.env = dict(os.environ, AGENTRY_ACCELERATOR="tcg", AGENTRY_STATE_DIR=self.state,
                        AGENTRY_CACHE_DIR=f"{self.root}/cache", GIT_AUTHOR_NAME="bench",
                        GIT_AUTHOR_EMAIL="bench@localhost", GIT_COMMITTER_NAME="bench",
                        GIT_COMMITTER_EMAIL="bench@localhost")
        self.agents = [f"agent-{i}" for i in range(args.agents)]
        self.server = None
        self.server_log = None
        self.serves = 0
        self.base = None
        self.figures = {}

    # ---- processes ----------------------------------------------------------------------------

    def agentry_cmd(self, arguments, stdin=None, timeout=600, check_status=True):
        command = [self.agentry] + arguments
        start = time.perf_counter()
        try:
            result = subprocess.run(command, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env=self.env, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise SystemExit(f"timed out after {timeout}s: {shlex.join(command)}")
        elapsed = time.perf_counter() - start
        if check_status and result.returncode != 0:
            raise SystemExit(f"{shlex.join(command)} failed ({result.returncode}):\n"
                             f"{result.stdout.decode()[-3000:]}{result.stderr.decode()[-3000:]}")
        return elapsed, result

    def git(self, *arguments):
        result = subprocess.run(["git", "-C", self.repo] + list(arguments), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=self.env, timeout=120)
        if result.returncode != 0:
            raise SystemExit(f"git {' '.join(arguments)} failed: {result.stderr.decode()}")
        return result.stdout.decode()

    def write_agent(self, name, instructions):
        with open(f"{self.repo}/agents/{name}.yaml", "w") as handle:
            handle.write(AGENT % (name, instructions))

    def commit(self, message):
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD").strip()

    def setup(self):
        for path, text in (("harnesses/shell.yaml", HARNESS), ("models/local.yaml", MODEL),
                           ("environments/tiny.yaml", ENVIRONMENT)):
            os.makedirs(os.path.dirname(f"{self.repo}/{path}"), exist_ok=True)
            with open(f"{self.repo}/{path}", "w") as handle:
                handle.write(text)
        os.makedirs(f"{self.repo}/agents")
        for name in self.agents:
            self.write_agent(name, "Benchmark.")
        subprocess.run(["git", "init", "-q", "-b", self.args.branch, self.repo], check=True, timeout=60)
        self.commit("agents")
        log(f"applying {len(self.agents)} agents (TCG) in {self.root}")
        elapsed, _ = self.agentry_cmd(["apply", "--repo", self.repo, "--state-dir", self.state, "--parallelism",
                                       str(len(self.agents)), "--boot-timeout", "300s", "--auto-approve"],
                                      timeout=900)
        self.figures["apply"] = elapsed
        log(f"applied in {elapsed:.1f}s")
        token = lambda scope: self.agentry_cmd(["token", "create", "--scope", scope, "--state-dir", self.state],
                                               timeout=60)[1].stdout.decode().strip()
        self.run_token, self.read_token = token("run"), token("read")
        self.agentry_cmd(["secret", "set", "github/webhook", "--state-dir", self.state],
                         stdin=WEBHOOK_SECRET.encode(), timeout=60)

    def start_serve(self, extra):
        self.serves += 1
        path = f"{self.root}/serve-{self.serves}.log"
        self.server_log = path
        command = [self.agentry, "serve", "--state-dir", self.state, "--repo", self.repo, "--listen", "127.0.0.1:0",
                   "--max-concurrent-runs", str(self.args.max_concurrent_runs), "--grace", "60s",
                   "--branch", self.args.branch] + extra
        self.serve_command = command
        with open(path, "wb") as output:
            self.server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=self.env,
                                           start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            text = open(path, errors="replace").read()
            for line in text.splitlines():
                if "listening on http://" in line:
                    self.base = line[line.index("http://"):].strip()
                    parsed = urllib.parse.urlsplit(self.base)
                    self.host, self.port = parsed.hostname, parsed.port
                    log(f"serve #{self.serves} (pid {self.server.pid}) at {self.base}: {shlex.join(extra)}")
                    return
            if self.server.poll() is not None:
                raise SystemExit(f"agentry serve exited ({self.server.returncode}) before listening:\n{text[-3000:]}")
            time.sleep(0.1)
        raise SystemExit(f"agentry serve printed no 'listening on http://' within 120 s:\n{text[-3000:]}")

    def stop_serve(self):
        if self.server is None:
            return None
        server, self.server = self.server, None
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=120)
            except subprocess.TimeoutExpired:
                log(f"serve (pid {server.pid}) still running 120 s after SIGTERM: SIGKILL")
                server.kill()
                server.wait(timeout=30)
        log(f"serve #{self.serves} exited {server.returncode}")
        return server.returncode

    def stop_machines(self):
        """SIGKILL each QEMU of this state directory, by pid (vm.pid files and /proc cmdlines)."""
        pids = set()
        marker = (self.state + "/").encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    cmdline = handle.read()
            except OSError:
                continue
            if marker in cmdline and b"qemu" in cmdline.split(b"\0")[0]:
                pids.add(int(entry))
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if pids:
            log(f"stopped {len(pids)} machines (pids {sorted(pids)})")

    # ---- HTTP ----------------------------------------------------------------------------------

    def connection(self, timeout=60):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method, path, token=None, body=None, headers=None, conn=None, timeout=60):
        """One request; (status, headers, body bytes). Opens its own connection unless given one."""
        own = conn is None
        conn = conn or self.connection(timeout)
        try:
            sent = dict(headers or {})
            if token:
                sent["Authorization"] = f"Bearer {token}"
            if body is not None:
                sent["Content-Type"] = "application/json"
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            data = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        finally:
            if own:
                conn.close()

    def get_json(self, path, token=None, attempts=5):
        last = None
        for _ in range(attempts):
            try:
                status, headers, data = self.request("GET", path, token or self.read_token)
            except (OSError, http.client.HTTPException) as error:
                last = repr(error)
                time.sleep(0.5)
                continue
            if status == 200:
                return json.loads(data)
            last = f"{status} {data[:300]!r}"
            time.sleep(float(headers.get("retry-after", "0.5")) if status in (429, 503) else 0.5)
        raise RuntimeError(f"GET {path}: {last}")

    # ---- load ----------------------------------------------------------------------------------

    def load(self):
        args = self.args
        rng = random.Random(42)
        retried = set(rng.sample(range(args.runs), args.runs // 2))
        ordered = sorted(retried)
        soon = set(ordered[::2])  # sent right after the first send; the others later
        jobs = []
        for i in range(args.runs):
            jobs.append((float(i), i, 0))
            if i in retried:
                jobs.append((i + 0.5 if i in soon else i + rng.uniform(1, max(2, args.runs / 4)), i, 1))
        jobs.sort()
        queue = collections.deque((i, send) for _, i, send in jobs)
        lock = threading.Lock()
        results = []  # dicts per send
        accepted = []  # run ids in acceptance order (201 only)
        # Follower j follows the accepted run number targets[j] (an even spread over the expected
        # queue) and is woken by its own event once that run is accepted, or when submission is
        # over. One condition notified on every 201 woke all 100 follower threads 500 times within
        # the burst: 50,000 wakeups queueing for one interpreter lock, on the cores the service
        # and the clients share, which is load no real client puts on a service.
        targets = [int(j * args.runs / max(1, args.streams)) for j in range(args.streams)]
        reached = [threading.Event() for _ in range(args.streams)]
        waking = [0]  # the first follower not yet woken (targets only grow)

        def wake_reached(everyone=False):
            with lock:
                while waking[0] < len(targets) and (everyone or targets[waking[0]] < len(accepted)):
                    reached[waking[0]].set()
                    waking[0] += 1
        start = time.perf_counter()

        # The clients, in --client-processes processes (started and connected before the first send).
        context = multiprocessing.get_context("spawn")
        ready, go = context.Queue(), context.Event()
        start_at, taken = context.Value("d", 0.0), context.Value("i", 0)
        per_process = [args.clients // args.client_processes + (1 if p < args.clients % args.client_processes else 0)
                       for p in range(args.client_processes)]
        pipes = [context.Pipe(duplex=False) for n in per_process if n > 0]
        processes = [context.Process(target=load_process, daemon=True,
                                     args=(self.host, self.port, self.run_token, self.agents, n, list(queue), taken,
                                           writer, ready, go, start_at))
                     for n, (_, writer) in zip([n for n in per_process if n > 0], pipes)]
        for process in processes:
            process.start()
        for _, writer in pipes:
            writer.close()  # the processes hold theirs: a pipe reads as ended once its process ended

        def collect():
            # The records as they come: the followers wait for accepted runs.
            open_pipes = [reader for reader, _ in pipes]
            while len(results) < len(jobs) and open_pipes:
                for reader in multiprocessing.connection.wait(open_pipes, timeout=1):
                    try:
                        record = reader.recv()
                    except (EOFError, OSError):
                        open_pipes.remove(reader)
                        continue
                    with lock:
                        results.append(record)
                        if record.get("status") == 201:
                            accepted.append(record["id"])
                    if record.get("status") == 201:
                        wake_reached()

        streams = []

        def follower(j):
            target = targets[j]
            outcome = {"j": j, "ended": False, "status": None, "events": collections.Counter(), "error": None}
            deadline = time.time() + args.deadline
            reached[j].wait(timeout=args.deadline)
            with lock:
                if not accepted:
                    outcome["error"] = "no run accepted"
                    streams.append(outcome)  # (the lock is held)
                    return
                run_id = accepted[min(target, len(accepted) - 1)]
            outcome["run"] = run_id
            conn = self.connection(60)  # keepalives come every 15 s
            try:
                conn.request("GET", f"/v1/runs/{run_id}/events", headers={"Authorization": f"Bearer {self.read_token}",
                                                                          "Accept": "text/event-stream"})
                response = conn.getresponse()
                outcome["status"] = response.status
                if response.status != 200:
                    outcome["error"] = f"{response.status} {response.read()[:300]!r}"
                else:
                    event, data = None, []
                    while time.time() < deadline:
                        line = response.readline()
                        if not line:
                            break
                        line = line.decode("utf-8", "replace").rstrip("\n")
                        if line == "":
                            if event:
                                outcome["events"][event] += 1
                                if event == "output":
                                    outcome.setdefault("output", []).append("".join(data))
                                if event == "end":
                                    outcome["ended"] = True
                                    outcome["final"] = json.loads("".join(data)).get("status")
                                    break
                            event, data = None, []
                        elif line.startswith("event:"):
                            event = line[6:].strip()
                        elif line.startswith("data:"):
                            data.append(line[5:].lstrip())
                    else:
                        outcome["error"] = "deadline"
                    if not outcome["ended"] and not outcome["error"]:
                        outcome["error"] = f"closed without end after {dict(outcome['events'])}"
            except (OSError, http.client.HTTPException, ValueError) as error:
                outcome["error"] = f"{type(error).__name__}: {error}"
            finally:
                conn.close()
            with lock:
                streams.append(outcome)

        followers = [threading.Thread(target=follower, args=(j,), daemon=True) for j in range(args.streams)]
        for thread in followers:
            thread.start()
        for _ in range(args.clients):
            ready.get(timeout=120)
        collector = threading.Thread(target=collect, daemon=True)
        log(f"load: {len(jobs)} sends ({args.runs} keys, {len(retried)} sent twice) from {args.clients} clients "
            f"in {len(processes)} processes, {args.streams} event streams")
        start = time.perf_counter()
        start_at.value = start
        collector.start()
        go.set()
        collector.join(timeout=max(1, args.deadline))
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
        wake_reached(everyone=True)
        if collector.is_alive() or len(results) < len(jobs):
            check(False, "submission finished within the deadline", f"{len(results)} of {len(jobs)} sends answered")
        window = max(r.get("at", 0) for r in results) if results else float("nan")
        log(f"submitted in {window:.1f}s; {len(accepted)} runs accepted; waiting for them to end")
        return results, accepted, streams, followers, window, start

    def wait_final(self, run_ids, start, deadline_s):
        """GET each run until final; per agent only past the first still-live one in acceptance order."""
        final = {}
        pending = list(run_ids)
        deadline = start + deadline_s
        last_report = 0
        conn = self.connection(30)
        while pending and time.perf_counter() < deadline:
            blocked = set()
            still = []
            for run_id in pending:
                agent = self.agent_of.get(run_id)
                if agent in blocked:
                    still.append(run_id)
                    continue
                try:
                    status, _, data = self.request("GET", f"/v1/runs/{run_id}", self.read_token, conn=conn)
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = self.connection(30)
                    still.append(run_id)
                    continue
                run = json.loads(data) if status == 200 else {}
                if run.get("status") in FINAL:
                    final[run_id] = run
                else:
                    blocked.add(agent)
                    still.append(run_id)
            pending = still
            if time.perf_counter() - last_report > 30:
                last_report = time.perf_counter()
                log(f"  {len(final)}/{len(run_ids)} runs final")
            if pending:
                time.sleep(1)
        conn.close()
        return final, pending

    def start_sampler(self):
        """Scrapes /metrics every 0.5 s: the most runs queued and active seen at once."""
        self.sampling = threading.Event()
        self.samples = {"queued": 0.0, "active": 0.0, "scrapes": 0, "errors": 0}

        def sample():
            while not self.sampling.wait(0.5):
                try:
                    status, _, data = self.request("GET", "/metrics", self.read_token, timeout=30)
                except (OSError, http.client.HTTPException):
                    self.samples["errors"] += 1
                    continue
                if status != 200:
                    self.samples["errors"] += 1
                    continue
                self.samples["scrapes"] += 1
                for line in data.decode().splitlines():
                    for name in ("queued", "active"):
                        if line.startswith(f"agentry_runs_{name} "):
                            self.samples[name] = max(self.samples[name], float(line.split()[-1]))

        self.sampler = threading.Thread(target=sample, daemon=True)
        self.sampler.start()

    def stop_sampler(self):
        self.sampling.set()
        self.sampler.join(timeout=60)
        return self.samples

    def record_intervals(self, records):
        """(agent, record id) -> (startedAt, endedAt) in seconds, from the records on the history branch."""
        records = sorted(records)
        if not records:
            return {}
        batch = "".join(f"agentry/history:runs/{agent}/{record}/record.yaml\n" for agent, record in records)
        result = subprocess.run(["git", "-C", self.repo, "cat-file", "--batch"], input=batch.encode(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
        data, position, intervals = result.stdout, 0, {}
        for key in records:
            header_end = data.index(b"\n", position)
            header = data[position:header_end].split()
            if header[-1] == b"missing":
                position = header_end + 1
                continue
            size = int(header[2])
            text = data[header_end + 1:header_end + 1 + size].decode()
            position = header_end + 1 + size + 1
            fields = {}
            for line in text.splitlines():
                if line.startswith(("startedAt:", "endedAt:")):
                    name, value = line.split(":", 1)
                    value = value.strip().strip('"')
                    fields[name] = datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            if "startedAt" in fields and "endedAt" in fields:
                intervals[key] = (fields["startedAt"], fields["endedAt"])
        return intervals

    # ---- overhead ------------------------------------------------------------------------------

    def overhead(self):
        agent, rounds = self.agents[0], self.args.rounds
        cli = []
        for k in range(rounds):
            elapsed, result = self.agentry_cmd(["run", agent, "--state-dir", self.state, "--repo", self.repo,
                                                "--prompt", f"cli-{k}"], timeout=300, check_status=False)
            if result.returncode != 0 or f"did cli-{k}" not in result.stdout.decode():
                check(False, f"CLI run {k} succeeded", f"exit {result.returncode}: {result.stderr.decode()[-500:]}")
            cli.append(elapsed)
        api, posts = [], []
        for k in range(rounds):
            t0 = time.perf_counter()
            status, _, data = self.request("POST", f"/v1/agents/{agent}/runs", self.run_token,
                                           json.dumps({"prompt": f"api-{k}"}), {"Idempotency-Key": f"overhead-{k}"})
            posts.append(time.perf_counter() - t0)
            if status != 201:
                check(False, f"API run {k} accepted", f"{status} {data[:300]!r}")
                continue
            run_id = json.loads(data)["id"]
            deadline = t0 + 300
            conn = self.connection(30)
            while time.perf_counter() < deadline:
                _, _, body = self.request("GET", f"/v1/runs/{run_id}", self.read_token, conn=conn)
                run = json.loads(body)
                if run["status"] in FINAL:
                    break
                time.sleep(0.02)
            conn.close()
            api.append(time.perf_counter() - t0)
            if run["status"] != "succeeded":
                check(False, f"API run {k} succeeded", json.dumps(run)[:500])
        return cli, api, posts

    # ---- push to Ready -------------------------------------------------------------------------

    def wait_ready(self, agent, commit, t0, seconds=300):
        deadline = t0 + seconds
        last = {}
        while time.perf_counter() < deadline:
            try:
                last = self.get_json(f"/v1/agents/{agent}")
            except RuntimeError as error:
                last = {"error": str(error)}
            ready = next((c for c in last.get("conditions") or [] if c.get("type") == "Ready"), {})
            if (last.get("appliedRevision") and last.get("appliedRevision") == last.get("desiredRevision")
                    and ready.get("status") == "True" and ready.get("observedCommit") == commit):
                return time.perf_counter() - t0, last
            time.sleep(0.05)
        return None, last

    def push_change(self, agent, serial):
        self.write_agent(agent, f"Benchmark, change {serial}.")
        return self.commit(f"change {serial}")

    def webhook(self, agent):
        commit = self.push_change(agent, 1)
        body = json.dumps({"ref": f"refs/heads/{self.args.branch}"}).encode()
        signature = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        t0 = time.perf_counter()
        status, _, data = self.request("POST", "/v1/hooks/github", body=body, headers={
            "X-GitHub-Event": "push", "X-Hub-Signature-256": signature, "Content-Type": "application/json"})
        check(status == 202, "the signed push webhook is accepted (202)", f"{status} {data[:300]!r}")
        elapsed, last = self.wait_ready(agent, commit, t0)
        check(elapsed is not None, f"{agent} Ready at {commit[:12]} after the webhook", json.dumps(last)[:800])
        return elapsed

    def polling(self, agent):
        # The service just started: wait for its first pass, then commit and wait for the next tick.
        t0 = time.perf_counter()
        while time.perf_counter() < t0 + 300:
            try:
                if (self.get_json("/v1/reconcile", self.admin_token).get("lastPass") or {}).get("result"):
                    break
            except RuntimeError:
                pass
            time.sleep(0.2)
        commit = self.push_change(agent, 2)
        t0 = time.perf_counter()
        elapsed, last = self.wait_ready(agent, commit, t0, seconds=300)
        check(elapsed is not None, f"{agent} Ready at {commit[:12]} by polling ({self.args.poll_interval})",
              json.dumps(last)[:800])
        return elapsed

    # ---- history -------------------------------------------------------------------------------

    def history_records(self):
        try:
            listing = self.git("ls-tree", "-r", "--name-only", "agentry/history", "runs/")
        except SystemExit:
            return set()
        return {tuple(path.split("/")[1:3]) for path in listing.splitlines() if path.endswith("/record.yaml")}

    def serve_log_problems(self):
        lines = []
        for n in range(1, self.serves + 1):
            path = f"{self.root}/serve-{n}.log"
            if os.path.exists(path):
                for line in open(path, errors="replace"):
                    lowered = line.lower()
                    if any(word in lowered for word in ("error", "warning", "critical", "fatal", "panic")):
                        lines.append(f"serve-{n}: {line.rstrip()}")
        return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agentry", default="/work/main/.build/release/agentry")
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--client-processes", type=int, default=2, help="processes the clients are spread over")
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20, help="sequential runs for the CLI/API overhead figure")
    parser.add_argument("--max-concurrent-runs", type=int, default=4)
    parser.add_argument("--poll-interval", default="10s", help="--interval of the second service (push by polling)")
    parser.add_argument("--branch", default="main")
    parser.add_argument("--deadline", type=float, default=1800, help="seconds for the load's runs to end")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders (logs, repository, state)")
    args = parser.parse_args()
    bench = Bench(args)
    began = time.perf_counter()
    exit_code = 0
    try:
        bench.setup()
        bench.admin_token = bench.agentry_cmd(["token", "create", "--scope", "admin", "--state-dir", bench.state],
                                              timeout=60)[1].stdout.decode().strip()
        bench.start_serve(["--interval", "0", "--webhook-secret", "github/webhook"])
        agents = bench.get_json("/v1/agents")["agents"]
        check(all(a.get("appliedRevision") for a in agents) and len(agents) == len(bench.agents),
              f"the service sees {len(bench.agents)} applied agents", json.dumps(agents)[:500])
        before = bench.history_records()

        bench.start_sampler()
        results, accepted, streams, followers, window, start = bench.load()
        bench.agent_of = {r["id"]: r["agent"] for r in results if r.get("id")}
        run_ids = list(dict.fromkeys(r["id"] for r in results if r.get("id")))
        final, pending = bench.wait_final(run_ids, start, args.deadline)
        drained = time.perf_counter() - start
        samples = bench.stop_sampler()
        for thread in followers:
            thread.join(timeout=max(1, start + args.deadline + 60 - time.perf_counter()))

        # -- correctness
        answered = [r for r in results if r.get("status") in (200, 201)]
        unexpected = [r for r in results if r.get("status") not in (200, 201)]
        check(not unexpected, "every send answered 201 or 200 (after 429 retries)",
              "; ".join(f"key load-{r['i']} send {r['send']}: {r.get('status')} {r.get('body', b'')[:200]!r} "
                        f"errors {r['errors'][:2]}" for r in unexpected[:5]) + f" ({len(unexpected)} in all)")
        by_key = collections.defaultdict(list)
        for r in answered:
            by_key[r["i"]].append(r)
        bad_keys = []
        for i, sends in by_key.items():
            ids = {r["id"] for r in sends}
            created = sum(1 for r in sends if r["status"] == 201)
            if len(ids) != 1 or created != 1:
                bad_keys.append(f"load-{i}: {[(r['status'], r['id']) for r in sends]}")
        twice = [i for i, sends in by_key.items() if len(sends) == 2]
        check(not bad_keys,
              f"each key gave one run: one 201, its retry 200 with the same id ({len(twice)} keys sent twice)",
              "; ".join(bad_keys[:5]) + f" ({len(bad_keys)} keys in all)")
        check(len(run_ids) == len(accepted) == args.runs, f"{args.runs} distinct runs accepted",
              f"{len(run_ids)} ids answered, {len(accepted)} answered 201")
        bad_location = [r for r in answered if r["status"] == 201 and r.get("location") != f"/v1/runs/{r['id']}"]
        check(not bad_location, "each 201 has Location /v1/runs/{id}",
              "; ".join(str((r["id"], r.get("location"))) for r in bad_location[:3]))
        check(not pending, f"every accepted run reached a final status within {args.deadline:.0f}s",
              f"{len(pending)} still live, e.g. {pending[:3]}")
        statuses = collections.Counter(run["status"] for run in final.values())
        not_ok = [run for run in final.values() if run["status"] != "succeeded"]
        check(not not_ok, "every run succeeded", f"{dict(statuses)}; e.g. " + "; ".join(
            f"{run['id']} {run['status']}: {run.get('message')}" for run in not_ok[:5]))
        wrong_agent = [run for run in final.values() if run["agent"] != bench.agent_of[run["id"]]]
        check(not wrong_agent, "each run belongs to the agent it was posted to", str(wrong_agent[:2]))
        record_ids = [run.get("recordId") for run in final.values()]
        check(all(record_ids) and len(set(record_ids)) == len(record_ids), "each final run has its own recordId",
              f"{sum(1 for x in record_ids if not x)} without, "
              f"{len([x for x in record_ids if x]) - len(set(x for x in record_ids if x))} repeated")
        after = bench.history_records()
        added = after - before
        per_agent_history = collections.Counter(agent for agent, _ in added)
        per_agent_succeeded = collections.Counter(
            run["agent"] for run in final.values() if run["status"] == "succeeded")
        expected = {(run["agent"], run["recordId"]) for run in final.values() if run.get("recordId")}
        check(added == expected, "history gained exactly the service runs' records",
              f"{len(added - expected)} unexpected, {len(expected - added)} missing, "
              f"e.g. {sorted(added - expected)[:3]} / {sorted(expected - added)[:3]}")
        check(per_agent_history == per_agent_succeeded, "history holds one record per succeeded run, per agent",
              f"history {dict(per_agent_history)} vs succeeded {dict(per_agent_succeeded)}")
        intervals = bench.record_intervals(added)
        check(len(intervals) == len(added), "each new record has startedAt and endedAt",
              f"{len(added) - len(intervals)} without")
        overlapping = []
        for agent in bench.agents:
            spans = sorted(span for (a, _), span in intervals.items() if a == agent)
            overlapping += [(agent, b, c) for b, c in zip(spans, spans[1:]) if c[0] < b[1]]
        check(not overlapping, "runs of one agent never overlap (records' startedAt/endedAt)",
              f"{len(overlapping)} overlaps, e.g. {overlapping[:2]}")
        edges = sorted([(s, 1) for s, _ in intervals.values()] + [(e, -1) for _, e in intervals.values()],
                       key=lambda edge: (edge[0], edge[1]))
        running = most = 0
        for _, step in edges:
            running += step
            most = max(most, running)
        check(most <= args.max_concurrent_runs, f"at most {args.max_concurrent_runs} runs at once (records)",
              f"{most} at once")
        check(samples["active"] <= args.max_concurrent_runs and samples["queued"] <= 100 * len(bench.agents),
              f"metrics never showed more than {args.max_concurrent_runs} active or 100 queued per agent",
              f"{samples}")
        print(f"  records: at most {most} runs at once; /metrics ({samples['scrapes']} scrapes, "
              f"{samples['errors']} failed): at most {samples['queued']:.0f} queued, {samples['active']:.0f} active")
        for agent, record in sorted(expected)[:3]:
            text = bench.git("show", f"agentry/history:runs/{agent}/{record}/record.yaml")
            check('outcome: "succeeded"' in text, f"record runs/{agent}/{record} says succeeded", text[:300])

        ended = [s for s in streams if s["ended"]]
        matching = [s for s in ended if final.get(s.get("run"), {}).get("status") == s.get("final")]
        # A stream carries its run's output, all of it and nothing else: what history's log holds.
        with_output = []
        for s in ended:
            run = final.get(s.get("run"), {})
            logged = None
            if run.get("recordId"):
                logged = bench.git("show", f"agentry/history:runs/{run['agent']}/{run['recordId']}/log.txt")
            streamed = "".join(json.loads(o).get("text", "") for o in s.get("output", []))
            if logged is not None and streamed == logged and "did p-" in streamed:
                with_output.append(s)
            else:
                print(f"  stream of {s.get('run')} ({run.get('agent')}) did not carry its log: events "
                      f"{dict(s['events'])}, output {streamed[:200]!r}; the log in history holds {logged!r}")
        stream_errors = collections.Counter((s.get("error") or "")[:80] for s in streams if not s["ended"])
        check(len(ended) == args.streams, f"all {args.streams} event streams ended with `event: end`",
              f"{len(ended)} ended; others: {dict(stream_errors)}")
        check(len(matching) == len(ended), "each stream's end event carries the run's final status",
              f"{len(ended) - len(matching)} differ")
        check(len(with_output) == len(ended), "each stream carried its run's output as history's log holds it",
              f"{len(ended) - len(with_output)} did not")

        # -- figures of the load
        latencies = [r["latency"] for r in answered]
        created = [r["latency"] for r in answered if r["status"] == 201]
        throttled = sum(r["throttled"] for r in results)
        conn_errors = sum(len(r["errors"]) for r in results)
        finished = [run for run in final.values() if run.get("finishedAt")]

        def stamp(text):
            return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

        if finished:
            first_created = min(stamp(run["createdAt"]) for run in final.values())
            last_finished = max(stamp(run["finishedAt"]) for run in finished)
            run_rate = len(finished) / max(1e-9, last_finished - first_created)
        else:
            run_rate = float("nan")
        recorded = {}
        for subject in bench.git("log", "--format=%s", "agentry/history").splitlines():
            # run AGENT ID: exit 0 in 0.4s
            words = subject.split()
            if len(words) >= 7 and words[0] == "run" and words[-1].endswith("s"):
                try:
                    recorded[words[2].rstrip(":")] = float(words[-1][:-1])
                except ValueError:
                    pass
        durations = [recorded[run["recordId"]] for run in finished if run.get("recordId") in recorded]
        fig = bench.figures
        fig.update(p50=percentile(latencies, 0.5), p99=percentile(latencies, 0.99), max=max(latencies or [0]),
                   p50c=percentile(created, 0.5), p99c=percentile(created, 0.99), window=window,
                   rate=len(accepted) / window if window else float("nan"), throttled=throttled,
                   conn_errors=conn_errors, sends=len(results), ended=len(ended), run_rate=run_rate,
                   drained=drained, with_output=len(with_output), run_p50=statistics.median(durations or [0]))

        try:
            status, _, metrics = bench.request("GET", "/metrics", bench.read_token)
            interesting = [line for line in metrics.decode().splitlines()
                           if line.startswith(("agentry_runs_total", "agentry_runs_queued", "agentry_runs_active"))
                           or (line.startswith("hb_requests") and 'http_response_status_code="2' not in line)
                           or (line.startswith("http_server_request_duration")
                               and 'http_route="/v1/agents/{name}/runs",http_request_method="POST",http_response_status_code="201"' in line)]
            print("metrics after the load:\n  " + "\n  ".join(interesting[:40]))
            # The service's own measure of the same sends (from its first byte of the request to its
            # answer), without the client's queueing.
            (p50s, p99s), counted = histogram_quantiles(
                metrics.decode(), "http_server_request_duration",
                ['http_route="/v1/agents/{name}/runs"', 'http_request_method="POST"'], [0.5, 0.99])
            fig.update(p50s=p50s, p99s=p99s, counted=counted)
        except (OSError, http.client.HTTPException) as error:
            print(f"metrics: {error}")

        # -- overhead, the service idle
        log(f"overhead: {args.rounds} CLI runs, then {args.rounds} API runs of {bench.agents[0]}")
        cli, api, posts = bench.overhead()
        fig.update(cli=statistics.median(cli), api=statistics.median(api) if api else float("nan"),
                   idle_post=statistics.median(posts))

        # -- push to Ready: webhook, then polling on a second service
        log("push to Ready by webhook")
        fig["webhook"] = bench.webhook(bench.agents[-1])
        status = bench.stop_serve()
        check(status == 0, "the service stops with exit 0 on SIGTERM", f"exit {status}")
        bench.start_serve(["--interval", args.poll_interval])
        log(f"push to Ready by polling (--interval {args.poll_interval})")
        fig["polling"] = bench.polling(bench.agents[-1])
        status = bench.stop_serve()
        check(status == 0, "the second service stops with exit 0 on SIGTERM", f"exit {status}")

        problems = bench.serve_log_problems()
        if problems:
            print(f"service log lines with error/warning ({len(problems)}):")
            for line in problems[:30]:
                print("  " + line)

        def secs(value):
            return "n/a" if value is None else f"{value:.2f} s"

        total = time.perf_counter() - began
        print()
        print(f"agents {len(bench.agents)}, runs {args.runs} ({fig['sends']} sends), clients {args.clients}, "
              f"streams {args.streams}, --max-concurrent-runs {args.max_concurrent_runs}; apply {fig['apply']:.1f} s; "
              f"bench {total / 60:.1f} min")
        print(f"accept latency, all sends:  p50 {fig['p50'] * 1000:.1f} ms, p99 {fig['p99'] * 1000:.1f} ms, "
              f"max {fig['max'] * 1000:.1f} ms (201 only: p50 {fig['p50c'] * 1000:.1f} ms, "
              f"p99 {fig['p99c'] * 1000:.1f} ms)")
        if "p50s" in fig:
            print(f"accept latency, the service's own histogram: p50 {fig['p50s'] * 1000:.1f} ms, "
                  f"p99 {fig['p99s'] * 1000:.1f} ms ({fig['counted']} sends, interpolated in its buckets)")
        print(f"accepted:                   {len(accepted)} runs in {fig['window']:.2f} s = {fig['rate']:.0f} runs/s; "
              f"429s {throttled}; connection errors {conn_errors}")
        print(f"runs carried out:           {len(finished)} in {fig['drained']:.0f} s from the first send "
              f"({fig['run_rate']:.2f} runs/s; median run {fig['run_p50']:.2f} s as recorded) {dict(statuses)}")
        print(f"event streams:              {fig['ended']}/{args.streams} ended with `end` "
              f"({fig['with_output']} of them carried the run's log)")
        print(f"CLI run vs API run:         {fig['cli'] * 1000:.0f} ms vs {fig['api'] * 1000:.0f} ms median "
              f"({fig['api'] / fig['cli']:.2f}x); the idle service accepts in {fig['idle_post'] * 1000:.1f} ms median")
        print(f"push to Ready:              webhook {secs(fig['webhook'])}, polling ({args.poll_interval}) "
              f"{secs(fig['polling'])}")
        print()
        print("| Date | accept p50 / p99 / max | accepted runs/s | 429s | streams ended | runs carried out | "
              "API / CLI run (median) | push to Ready: webhook / polling " + args.poll_interval + " |")
        print("|---|---|---|---|---|---|---|---|")
        print(f"| {time.strftime('%Y-%m-%d')} (2 cores, TCG) | {fig['p50'] * 1000:.1f} / {fig['p99'] * 1000:.1f} / "
              f"{fig['max'] * 1000:.0f} ms | {fig['rate']:.0f} | {throttled} | {fig['ended']}/{args.streams} | "
              f"{len(finished)} in {fig['drained']:.0f} s ({fig['run_rate']:.2f}/s) | "
              f"{fig['api'] * 1000:.0f} / {fig['cli'] * 1000:.0f} ms ({fig['api'] / fig['cli']:.2f}x) | "
              f"{secs(fig['webhook'])} / {secs(fig['polling'])} |")
        print()
        print("    python3 " + shlex.join(["bench/serve_load.py"] + sys.argv[1:]))
    except BaseException as error:
        exit_code = 1
        if not isinstance(error, SystemExit) or error.code not in (None, 0):
            print(f"FAIL: the bench stopped: {error!r}"[:4000], flush=True)
            if bench.server_log and os.path.exists(bench.server_log):
                print("last lines of the service's log:\n" + open(bench.server_log, errors="replace").read()[-3000:])
    finally:
        try:
            bench.stop_serve()
        finally:
            bench.stop_machines()
            if args.keep:
                print(f"kept {bench.root}")
            else:
                shutil.rmtree(bench.root, ignore_errors=True)
    if failures:
        print(f"{len(failures)} checks failed: " + "; ".join(failures))
        exit_code = 1
    sys.exit(exit_code)


if __name__ == "__main__":
    main()
