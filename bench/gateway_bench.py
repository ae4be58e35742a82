#!/usr/bin/env python3
"""Benchmark: what the model gateway adds to a model call, in one run on loopback.

Starts the test model stub (Tests/Fixtures/model_stub.py), agentry's gateway for it (`agentry
gateway-bench`, the gateway a run's machine reaches, served on a unix socket as for a machine), and,
when `--litellm` names its executable, LiteLLM's proxy configured for the same stub. One client
then measures each path:

  latency     --requests non-streamed chat completions, one after another on one kept-alive
              connection: p50 and p99 of each call, and what each path adds to calling the stub
              directly (its p50 and p99 minus the direct ones)
  throughput  --streams streamed answers of --chunks chunks (64 characters each, each written and
              flushed on its own by the stub), read raw off the socket: MB/s of the median stream

Each path is measured against direct calls made at the same time: the two take turns (a round of
calls, then a stream each, --streams rounds), so that what else a shared machine does at a moment
falls on both alike. The gateway goes first; LiteLLM, whose workers keep the machine busy, is
started after and compared with direct calls made while it runs.

Targets (issue 13): p50 added latency under 1 ms, streamed throughput within 5% of direct, and at
least 5x less added latency than LiteLLM.

    swift build -c release
    python3 -m venv /tmp/litellm && /tmp/litellm/bin/pip install 'litellm[proxy]'
    python3 bench/gateway_bench.py --agentry .build/release/agentry --litellm /tmp/litellm/bin/litellm
"""
import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUB = os.path.join(ROOT, "Tests", "Fixtures", "model_stub.py")
KEY = "sk-bench-provider-key"
MASTER_KEY = "sk-bench-litellm-master-key-0123456789abcdef0123456789abcdef"


class UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket, as a machine's socat reaches the gateway."""

    def __init__(self, path):
        super().__init__("gateway")
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.socket_path)


class TCPConnection(http.client.HTTPConnection):
    def connect(self):
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def tcp_socket(port):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def unix_socket(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    return sock


def call(connection, path, token, model, stream=False):
    """One chat completion; returns the answer's length in bytes."""
    body = json.dumps({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
    connection.request("POST", path, body=body, headers={
        "content-type": "application/json", "authorization": "Bearer " + token})
    response = connection.getresponse()
    size = 0
    while True:
        data = response.read(65536)
        if not data:
            break
        size += len(data)
    if response.status != 200:
        raise SystemExit(f"HTTP {response.status} from {path}")
    return size


def stream(open_socket, path, token, model):
    """One streamed chat completion read off a socket of its own as raw bytes (no decoding, so the
    client costs little beside the path measured); returns the seconds until its last chunk."""
    body = json.dumps({"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]}).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    with open_socket() as sock:
        start = time.perf_counter()
        sock.sendall(head.encode() + body)
        buffer = bytearray(1 << 20)
        tail = b""
        status = None
        while True:
            count = sock.recv_into(buffer)
            if count == 0:
                raise SystemExit(f"the stream from {path} ended before its last chunk")
            if status is None:
                status = bytes(buffer[9:12])
            tail = (tail + bytes(buffer[max(0, count - 8):count]))[-8:]
            if tail.endswith(b"\r\n0\r\n\r\n"):
                elapsed = time.perf_counter() - start
                break
    if status != b"200":
        raise SystemExit(f"HTTP {status.decode()} from {path}")
    return elapsed


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


class Path:
    """One way to the stub: direct, through agentry's gateway, or through LiteLLM."""

    def __init__(self, name, connect, open_socket, path, token):
        self.name, self.connect, self.open_socket, self.path, self.token = name, connect, open_socket, path, token
        self.latencies, self.rates = [], []
        self.connection = None

    def calls(self, count):
        if self.connection is None:
            self.connection = self.connect()
        for _ in range(count):
            start = time.perf_counter()
            call(self.connection, self.path, self.token, "stub-model")
            self.latencies.append(time.perf_counter() - start)

    def stream(self, chunks):
        if not hasattr(self, "size"):
            # The answer's size, decoded once.
            self.size = call(self.connect(), self.path, self.token, f"bulk-{chunks}", stream=True)
        self.rates.append(self.size / stream(self.open_socket, self.path, self.token, f"bulk-{chunks}") / 1e6)

    def figures(self):
        return {"path": self.name, "p50": percentile(self.latencies, 0.5) * 1e3,
                "p99": percentile(self.latencies, 0.99) * 1e3, "throughput": statistics.median(self.rates)}


def calls_per_round(args):
    return max(1, args.requests // max(args.streams, 1))


def measure(paths, args):
    """The paths take turns, a round of calls and a stream each at a time, so that what else the
    machine does at a moment falls on all of them alike."""
    for path in paths:
        path.calls(args.warmup)
        path.latencies.clear()
    rounds = max(args.streams, 1)
    for round in range(rounds):
        for path in paths:
            path.calls(calls_per_round(args))
        for path in paths:
            path.stream(args.chunks)
    return [path.figures() for path in paths]


def wait_for_port(port, process, log, deadline=180):
    end = time.time() + deadline
    while time.time() < end:
        if process.poll() is not None:
            raise SystemExit(f"LiteLLM exited ({process.returncode}); see {log}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"nothing listens on port {port} after {deadline} s")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agentry", default=".build/release/agentry")
    parser.add_argument("--litellm", help="LiteLLM's `litellm` executable (optional)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--streams", type=int, default=20, help="streams per path; the calls are spread over as many rounds")
    parser.add_argument("--chunks", type=int, default=20000)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="agentry-gateway-bench-")
    processes = []
    try:
        stub = subprocess.Popen([sys.executable, STUB, "/dev/null"], stdout=subprocess.PIPE, text=True)
        processes.append(stub)
        port = int(stub.stdout.readline())
        upstream = f"http://127.0.0.1:{port}/v1"

        socket_path = os.path.join(scratch, "gateway.sock")
        gateway = subprocess.Popen(
            [os.path.abspath(args.agentry), "gateway-bench", "--socket", socket_path, "--base-url", upstream,
             "--api", "chat-completions"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        processes.append(gateway)
        gateway.stdin.write(KEY + "\n")
        gateway.stdin.flush()
        token = gateway.stdout.readline().strip()

        def direct():
            return Path("direct", lambda: TCPConnection("127.0.0.1", port), lambda: tcp_socket(port),
                        "/v1/chat/completions", KEY)

        # The gateway against direct calls first, before LiteLLM (whose workers keep busy) starts.
        results = measure([direct(), Path("agentry gateway", lambda: UnixConnection(socket_path),
                                          lambda: unix_socket(socket_path), "/v1/chat/completions", token)], args)
        if args.litellm:
            litellm_port = free_port()
            config = os.path.join(scratch, "litellm.yaml")
            with open(config, "w") as f:
                f.write(
                    "model_list:\n  - model_name: stub-model\n    litellm_params:\n"
                    f"      model: openai/stub-model\n      api_base: {upstream}\n      api_key: {KEY}\n"
                    "  - model_name: bulk-*\n    litellm_params:\n"
                    f"      model: openai/bulk-*\n      api_base: {upstream}\n      api_key: {KEY}\n"
                    "litellm_settings:\n  telemetry: false\n"
                    # A key checked on every call, as the gateway checks the run's token.
                    f"general_settings:\n  master_key: {MASTER_KEY}\n")
            log = open(os.path.join(scratch, "litellm.log"), "w")
            litellm = subprocess.Popen(
                [args.litellm, "--config", config, "--host", "127.0.0.1", "--port", str(litellm_port)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            processes.append(litellm)
            wait_for_port(litellm_port, litellm, log.name)
            # LiteLLM against direct calls of its own, made while it runs.
            baseline, proxied = measure(
                [direct(), Path("LiteLLM proxy", lambda: TCPConnection("127.0.0.1", litellm_port),
                                lambda: tcp_socket(litellm_port), "/v1/chat/completions", MASTER_KEY)], args)
            baseline["path"] = "direct (LiteLLM up)"
            results += [baseline, proxied]

        gateway.stdin.close()
        usage = json.loads(gateway.stdout.readline())
        expected = args.warmup + calls_per_round(args) * max(args.streams, 1) + 1 + args.streams
        if usage["calls"] != expected:
            raise SystemExit(f"the gateway counted {usage['calls']} calls, not {expected}")

        for base, result in [(results[0], results[1])] + ([(results[2], results[3])] if len(results) == 4 else []):
            result["addedP50"] = result["p50"] - base["p50"]
            result["addedP99"] = result["p99"] - base["p99"]
            result["throughputRatio"] = result["throughput"] / base["throughput"]
        if args.json:
            print(json.dumps(results, indent=2))
            return
        print(f"{args.requests} calls and {args.streams} streams of {args.chunks} chunks per path, in {args.streams} rounds; "
              "throughput is the median stream's")
        print(f"{'path':<18}{'p50 ms':>9}{'p99 ms':>9}{'added p50':>11}{'added p99':>11}{'MB/s':>9}{'vs direct':>11}")
        for r in results:
            added = (f"{r['addedP50']:>11.3f}{r['addedP99']:>11.3f}" if "addedP50" in r else f"{'':>22}")
            ratio = f"{r['throughputRatio']:>10.3f}x" if "throughputRatio" in r else ""
            print(f"{r['path']:<18}{r['p50']:>9.3f}{r['p99']:>9.3f}{added}{r['throughput']:>9.1f}{ratio}")
        if len(results) == 4 and results[1]["addedP50"] > 0:
            print(f"LiteLLM adds {results[3]['addedP50'] / results[1]['addedP50']:.1f}x the gateway's p50 latency")
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                # LiteLLM runs workers of its own: its whole process group goes.
                if process.pid == os.getpgid(process.pid):
                    os.killpg(process.pid, signal.SIGTERM)
                else:
                    process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()


if __name__ == "__main__":
    main()
