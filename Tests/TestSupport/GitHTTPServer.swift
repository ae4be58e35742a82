import Foundation

/// A git server on loopback that takes only a token, as GitHub does: git's own smart-HTTP
/// `http-backend` serving the bare repositories under `root`, behind HTTP Basic authentication
/// with the user `x-access-token` and `token` as the password.
public final class GitHTTPServer {
    static let script = """
        import base64, http.server, os, subprocess, sys
        root, token = sys.argv[1], sys.argv[2]
        expected = "Basic " + base64.b64encode(("x-access-token:" + token).encode()).decode()
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def body(self):
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().strip().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""
            def git(self):
                data = self.body()
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="git"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path, _, query = self.path.partition("?")
                env = {"GIT_PROJECT_ROOT": root, "GIT_HTTP_EXPORT_ALL": "1", "PATH_INFO": path,
                       "REQUEST_METHOD": self.command, "QUERY_STRING": query,
                       "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(data)),
                       "REMOTE_USER": "x-access-token", "REMOTE_ADDR": "127.0.0.1", "PATH": os.environ["PATH"]}
                out = subprocess.run(["git", "http-backend"], input=data, env=env, capture_output=True).stdout
                head, _, rest = out.partition(b"\\r\\n\\r\\n")
                status, headers = 200, []
                for line in head.split(b"\\r\\n"):
                    key, _, value = line.decode().partition(": ")
                    if key.lower() == "status":
                        status = int(value.split()[0])
                    elif key:
                        headers.append((key, value))
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(rest)))
                self.end_headers()
                self.wfile.write(rest)
            do_GET = git
            do_POST = git
            def log_message(self, *args):
                pass
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        print(server.server_address[1], flush=True)
        server.serve_forever()
        """

    let process: BackgroundProcess
    /// The port it listens on.
    public let port: String

    public init(root: String, token: String) throws {
        process = try BackgroundProcess("python3", ["-c", Self.script, root, token])
        port = process.firstLine()
        guard Int(port) != nil else { throw Shell.Failure(description: "the git server did not start: \(port)") }
    }

    /// The URL of the repository `name` (such as `agents.git`) under the root.
    public func url(_ name: String) -> String { "http://127.0.0.1:\(port)/\(name)" }
}
