import AgentryMachine
import AgentryRender
import Foundation
import Testing

@Suite struct EgressProxyTests {
    /// Feeds one request to the proxy on a pipe and returns its answer.
    func ask(_ request: String, allow: [String]) -> String {
        var input: [Int32] = [0, 0]
        var output: [Int32] = [0, 0]
        pipe(&input)
        pipe(&output)
        var bytes = Array(request.utf8)
        _ = write(input[1], &bytes, bytes.count)
        close(input[1])
        _ = EgressProxyServer.serve(EgressAllowlist(allow), input: input[0], output: output[1])
        close(output[1])
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(output[0], &buffer, buffer.count)
            if count <= 0 { break }
            answer += buffer[0..<count]
        }
        close(input[0])
        close(output[0])
        return String(decoding: answer, as: UTF8.self)
    }

    @Test func refusesHostsOutsideTheListAndNamesThatAreNotNames() {
        let refused = ask("CONNECT evil.example.net:443 HTTP/1.1\r\n\r\n", allow: ["*.example.com"])
        #expect(refused.hasPrefix("HTTP/1.1 403") && refused.contains("*.example.com"))
        // A NUL would cut the name for the resolver after the allowlist matched the whole of it.
        let smuggled = ask("CONNECT 169.254.169.254\u{0}.example.com:443 HTTP/1.1\r\n\r\n", allow: ["*.example.com"])
        #expect(smuggled.hasPrefix("HTTP/1.1 400"), "\(smuggled)")
        let spaced = ask("GET http://a b.example.com/ HTTP/1.1\r\n\r\n", allow: ["*.example.com"])
        #expect(spaced.hasPrefix("HTTP/1.1 400"))
        let port = ask("CONNECT api.example.com:22 HTTP/1.1\r\n\r\n", allow: ["api.example.com"])
        #expect(port.hasPrefix("HTTP/1.1 403"))
    }
}
