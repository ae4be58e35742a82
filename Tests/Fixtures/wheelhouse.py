#!/usr/bin/env python3
"""A local Python package index for tests: serves DIR on 127.0.0.1 (pip's --find-links reads the
listing) and prints the port first. With --probe NAME, first writes a tiny wheel `agentry-probe-NAME`
1.0 whose console script `probe-NAME` prints "probe NAME" and the interpreter's prefix.

    wheelhouse.py DIR [--probe a --probe b]
"""
import argparse
import base64
import hashlib
import http.server
import os
import sys
import zipfile


def probe_wheel(folder, name):
    package = f"agentry_probe_{name}"
    dist = f"{package}-1.0.dist-info"
    files = {
        f"{package}/__init__.py": f"import sys\n\ndef main():\n    print('probe {name}', sys.prefix)\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: agentry-probe-{name}\nVersion: 1.0\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: agentry-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/entry_points.txt": f"[console_scripts]\nprobe-{name} = {package}:main\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    with zipfile.ZipFile(os.path.join(folder, f"{package}-1.0-py3-none-any.whl"), "w") as wheel:
        for path, text in files.items():
            wheel.writestr(path, text)


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("--probe", action="append", default=[])
    args = parser.parse_args()
    os.makedirs(args.folder, exist_ok=True)
    for name in args.probe:
        probe_wheel(args.folder, name)
    os.chdir(args.folder)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
