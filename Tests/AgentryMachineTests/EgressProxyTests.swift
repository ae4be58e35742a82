import AgentryMachine
import AgentryRender
import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The egress proxy a machine's supervisor serves, driven over its unix socket as QEMU's connector
/// would drive it, against a real HTTP server on loopback.
@Suite(.serialized) struct EgressProxyTests {
    /// A web server on loopback that writes each request line it receives to `log`.
    func server(log: String) throws -> (BackgroundProcess, Int) {
        let process = try BackgroundProcess(
            "python3",
            [
                "-c",
                """
                import http.server, sys
                class H(http.server.BaseHTTPRequestHandler):
                    def do_GET(self):
                        open(sys.argv[1], 'a').write(self.requestline + '\\n')
                        body = b'reached ' + self.path.encode()
                        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers()
                        self.wfile.write(body)
                    def log_message(self, *a): pass
                s = http.server.HTTPServer(('127.0.0.1', 0), H)
                print(s.server_address[1], flush=True)
                s.serve_forever()
                """,
                log,
            ])
        let port = Int(process.firstLine().trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        return (process, port)
    }

    func service(_ folder: TemporaryDirectory, allow: [String], limits: EgressService.Limits = .init()) throws
        -> EgressService
    {
        try EgressService(socket: folder.path + "/egress.sock", limits: limits) { EgressAllowlist(allow) }
    }

    /// Sends `request` on a new connection and returns everything the proxy answers until it closes.
    func ask(_ folder: TemporaryDirectory, _ request: String) throws -> String {
        let socket = try #require(connect(folder))
        defer { close(socket) }
        var bytes = Array(request.utf8)
        _ = write(socket, &bytes, bytes.count)
        return readAll(socket, seconds: 20)
    }

    func connect(_ folder: TemporaryDirectory) -> Int32? {
        let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let path = Array((folder.path + "/egress.sock").utf8CString)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.enumerated() where index < raw.count { raw[index] = UInt8(bitPattern: byte) }
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard connected == 0 else {
            close(descriptor)
            return nil
        }
        return descriptor
    }

    func readAll(_ descriptor: Int32, seconds: Double) -> String {
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while ContinuousClock.now < deadline {
            var poller = [pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)]
            guard poll(&poller, 1, 100) >= 0 else { break }
            if poller[0].revents == 0 { continue }
            let count = read(descriptor, &buffer, buffer.count)
            if count <= 0 { break }
            answer += buffer[0..<count]
        }
        return String(decoding: answer, as: UTF8.self)
    }

    @Test func refusesHostsOutsideTheListAndNamesThatAreNotNames() throws {
        let folder = try TemporaryDirectory("agentry-egress")
        let proxy = try service(folder, allow: ["*.example.com", "api.example.com"])
        defer { proxy.stop() }
        let refused = try ask(folder, "CONNECT evil.example.net:443 HTTP/1.1\r\nHost: evil.example.net\r\n\r\n")
        #expect(refused.hasPrefix("HTTP/1.1 403") && refused.contains("*.example.com"), "\(refused)")
        // A NUL would cut the name for the resolver after the allowlist matched the whole of it.
        let smuggled = try ask(folder, "CONNECT 169.254.169.254%00.example.com:443 HTTP/1.1\r\n\r\n")
        #expect(smuggled.hasPrefix("HTTP/1.1 400"), "\(smuggled)")
        let port = try ask(folder, "CONNECT api.example.com:22 HTTP/1.1\r\n\r\n")
        #expect(port.hasPrefix("HTTP/1.1 403"), "\(port)")
        let origin = try ask(folder, "GET /etc/passwd HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
        #expect(origin.hasPrefix("HTTP/1.1 400"), "\(origin)")
    }

    /// Requests that RFC 9112 does not allow are refused before anything is checked or relayed.
    @Test func malformedRequestsAreRefused() throws {
        let folder = try TemporaryDirectory("agentry-egress")
        let proxy = try service(folder, allow: ["api.example.com"])
        defer { proxy.stop() }
        for request in [
            "GET http://api.example.com/ HTTP/1.1\nHost: api.example.com\n\n",
            "GET http://api.example.com/ HTTP/1.1\r\nHost : api.example.com\r\n\r\n",
            "GET http://api.example.com/ HTTP/1.1\r\nHost: api.example.com\r\nHost: evil.example.net\r\n\r\n",
            "GET http://api.example.com/ HTTP/1.1\r\nHost: api.example.com\r\n folded: header\r\n\r\n",
        ] {
            let answer = try ask(folder, request)
            #expect(answer.hasPrefix("HTTP/1.1 400"), "\(request.debugDescription) → \(answer)")
        }
    }

    /// One request per connection reaches the server; what a guest pipelines after it (another
    /// host behind the same server, say) never does.
    @Test func aPipelinedSecondRequestIsNeverRelayed() throws {
        let folder = try TemporaryDirectory("agentry-egress")
        let log = folder.path + "/requests.log"
        let (web, port) = try server(log: log)
        defer { withExtendedLifetime(web) {} }
        let proxy = try service(folder, allow: ["127.0.0.1:\(port)"])
        defer { proxy.stop() }
        let answer = try ask(
            folder,
            "GET http://127.0.0.1:\(port)/first HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET http://evil.example.net/second HTTP/1.1\r\nHost: evil.example.net\r\n\r\n"
        )
        #expect(answer.hasPrefix("HTTP/1.0 200") && answer.hasSuffix("reached /first"), "\(answer)")
        let seen = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        #expect(seen == "GET /first HTTP/1.1\n", "the server saw: \(seen)")
    }

    /// CONNECT opens a tunnel to an allowed host and relays both ways.
    @Test func connectTunnelsToAnAllowedHost() throws {
        let folder = try TemporaryDirectory("agentry-egress")
        let (web, port) = try server(log: folder.path + "/requests.log")
        defer { withExtendedLifetime(web) {} }
        let proxy = try service(folder, allow: ["127.0.0.1:\(port)"])
        defer { proxy.stop() }
        let answer = try ask(
            folder,
            "CONNECT 127.0.0.1:\(port) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\n\r\nGET /tunnelled HTTP/1.0\r\n\r\n")
        #expect(answer.hasPrefix("HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.0 200"), "\(answer)")
        #expect(answer.hasSuffix("reached /tunnelled"))
    }

    /// However many connections a guest opens and holds, the proxy keeps a bounded number: more
    /// are answered 503 at once, and held ones are closed at the request-head deadline.
    @Test func heldConnectionsAreBounded() async throws {
        let folder = try TemporaryDirectory("agentry-egress")
        var limits = EgressService.Limits()
        limits.connections = 8
        limits.requestHead = .seconds(1)
        let proxy = try service(folder, allow: ["api.example.com"], limits: limits)
        defer { proxy.stop() }
        var held: [Int32] = []
        defer { held.forEach { close($0) } }
        for _ in 0..<8 { held.append(try #require(connect(folder))) }
        try await waitUntil("eight connections held") { proxy.connections == 8 }
        let extra = try #require(connect(folder))
        defer { close(extra) }
        let refused = readAll(extra, seconds: 5)
        #expect(refused.hasPrefix("HTTP/1.1 503"), "\(refused)")
        let timedOut = readAll(held[0], seconds: 5)
        #expect(timedOut.hasPrefix("HTTP/1.1 408"), "\(timedOut)")
        try await waitUntil("every held connection closed by the proxy") { proxy.connections == 0 }
    }
}
