import AgentryRender
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// The guest's only way out when its egress is a list of hosts: QEMU's user network runs with
/// `restrict=on` (nothing the guest sends leaves the host) and a `guestfwd` rule hands each TCP
/// connection to 10.0.2.100:3128 to `agentry egress-proxy` on standard input and output. The proxy
/// reads one HTTP request: `CONNECT host:port` (HTTPS) or an absolute-form `GET http://host/...`,
/// refuses hosts outside the allowlist with 403 and a message saying so, and otherwise connects
/// and relays bytes both ways until either side closes. The guest finds it through
/// `HTTPS_PROXY`/`HTTP_PROXY`, which runs set.
public enum EgressProxyServer {
    /// Serves one connection on `input`/`output` (QEMU's guestfwd gives them as stdin and stdout).
    public static func serve(_ allowlist: EgressAllowlist, input: Int32 = 0, output: Int32 = 1) -> Int32 {
        signal(SIGPIPE, SIG_IGN)
        var head: [UInt8] = []
        var byte = [UInt8](repeating: 0, count: 4096)
        let terminator: [UInt8] = [13, 10, 13, 10]
        while !head.suffix(4).elementsEqual(terminator) {
            guard head.count < 16384 else { return reply(output, 431, "request head too large") }
            let count = read(input, &byte, 1)
            if count <= 0 { return 0 }
            head.append(byte[0])
        }
        let text = String(decoding: head, as: UTF8.self)
        let lines = text.components(separatedBy: "\r\n")
        let parts = lines[0].split(separator: " ")
        guard parts.count == 3 else { return reply(output, 400, "not an HTTP request") }
        let method = String(parts[0])
        var target = String(parts[1])
        var host: String
        var port: Int
        var forward: [UInt8] = []
        if method == "CONNECT" {
            guard let colon = target.lastIndex(of: ":"), let number = Int(target[target.index(after: colon)...]) else {
                return reply(output, 400, "CONNECT needs host:port")
            }
            host = String(target[..<colon])
            port = number
        } else {
            // Plain HTTP through a proxy: the absolute URL names the host; the request goes on in origin form.
            guard let url = URL(string: target), url.scheme == "http", let name = url.host else {
                return reply(output, 400, "expected CONNECT or an absolute http:// URL")
            }
            host = name
            port = url.port ?? 80
            // The path as sent (still percent-encoded), and the Host header the allowlist checked:
            // the guest's own Host header could name another site behind the same server.
            let components = URLComponents(url: url, resolvingAgainstBaseURL: false)
            target = components?.percentEncodedPath ?? "/"
            if target.isEmpty { target = "/" }
            if let query = components?.percentEncodedQuery { target += "?" + query }
            let headers = lines.dropFirst().filter {
                let name = $0.lowercased()
                return !name.hasPrefix("proxy-") && !name.hasPrefix("host:")
            }
            let hostHeader = "Host: " + (host.contains(":") ? "[\(host)]" : host) + (url.port.map { ":\($0)" } ?? "")
            forward = Array(
                "\(method) \(target) \(parts[2])\r\n\(hostHeader)\r\n\(headers.joined(separator: "\r\n"))".utf8)
        }
        // Only plain host names and addresses go further: a NUL, a space or any other byte in a
        // name would be cut or read differently by the resolver than by the allowlist check.
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard isPlainHost(host), (1...65535).contains(port) else {
            return reply(output, 400, "agentry: \"\(host)\" is not a host name or address")
        }
        guard allowlist.allows(host: host, port: port) else {
            return reply(
                output, 403,
                "agentry: egress to \(host):\(port) is not allowed; this machine may reach \(allowlist.entries.joined(separator: ", ")) (the Environment's network.egress)"
            )
        }
        // 10.0.2.2 is the host as QEMU's user network shows it to the guest (where a local model
        // server, `baseUrl: http://10.0.2.2:8080/v1`, listens on the host's loopback).
        let destination = host == "10.0.2.2" ? "127.0.0.1" : host
        guard let socket = connect(host: destination, port: port) else {
            return reply(output, 502, "agentry: cannot connect to \(host):\(port)")
        }
        defer { close(socket) }
        if method == "CONNECT" {
            writeAll(output, Array("HTTP/1.1 200 Connection established\r\n\r\n".utf8))
        } else {
            writeAll(socket, forward)
        }
        relay(input, output, socket)
        return 0
    }

    /// Letters, digits, dots and hyphens (a name or an IPv4 address), or an IPv6 address.
    static func isPlainHost(_ host: String) -> Bool {
        guard !host.isEmpty, host.utf8.count <= 253 else { return false }
        if host.contains(":") {
            return host.unicodeScalars.allSatisfy {
                ("0"..."9").contains($0) || ("a"..."f").contains($0) || ("A"..."F").contains($0) || $0 == ":"
                    || $0 == "."
            }
        }
        return host.unicodeScalars.allSatisfy {
            ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "." || $0 == "-"
        }
    }

    static func reply(_ output: Int32, _ status: Int, _ message: String) -> Int32 {
        let reason =
            [400: "Bad Request", 403: "Forbidden", 431: "Request Header Fields Too Large", 502: "Bad Gateway"][status]
            ?? "Error"
        let body = message + "\n"
        writeAll(
            output,
            Array(
                "HTTP/1.1 \(status) \(reason)\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
                    .utf8))
        return 1
    }

    static func writeAll(_ descriptor: Int32, _ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBufferPointer { write(descriptor, $0.baseAddress, $0.count) }
            if written < 0 && errno == EINTR { continue }
            if written <= 0 { return }
            offset += written
        }
    }

    static func connect(host: String, port: Int) -> Int32? {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var results: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &results) == 0, let first = results else { return nil }
        defer { freeaddrinfo(first) }
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let info = cursor {
            let descriptor = socket(info.pointee.ai_family, info.pointee.ai_socktype, info.pointee.ai_protocol)
            if descriptor >= 0 {
                if Glibc.connect(descriptor, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 { return descriptor }
                close(descriptor)
            }
            cursor = info.pointee.ai_next
        }
        return nil
    }

    /// Copies guest → remote and remote → guest until both directions end.
    static func relay(_ input: Int32, _ output: Int32, _ socket: Int32) {
        var buffer = [UInt8](repeating: 0, count: 65536)
        var guestOpen = true
        var remoteOpen = true
        while guestOpen || remoteOpen {
            var descriptors: [pollfd] = []
            if guestOpen { descriptors.append(pollfd(fd: input, events: Int16(POLLIN), revents: 0)) }
            if remoteOpen { descriptors.append(pollfd(fd: socket, events: Int16(POLLIN), revents: 0)) }
            if poll(&descriptors, nfds_t(descriptors.count), -1) < 0 {
                if errno == EINTR { continue }
                return
            }
            for entry in descriptors where entry.revents != 0 {
                let count = read(entry.fd, &buffer, buffer.count)
                if count <= 0 {
                    if entry.fd == input {
                        guestOpen = false
                        shutdown(socket, Int32(SHUT_WR))
                    } else {
                        remoteOpen = false
                        close(output)
                    }
                    continue
                }
                writeAll(entry.fd == input ? socket : output, Array(buffer[0..<count]))
            }
            // The remote finished: nothing more can come back, so the guest's side ends too.
            if !remoteOpen { return }
        }
    }
}
