#!/usr/bin/env python3
"""A stand-in model server for tests and benchmarks: speaks the Messages, chat completions and
Responses APIs, streamed (server-sent events) and not, and logs what it received.

    python3 model_stub.py LOG_FILE [PORT]

Prints the port it listens on (127.0.0.1), then serves until killed. Every request is logged to
LOG_FILE as one JSON line: method, path, headers (lower-case names) and the `model` it asked for.
The answer says which model it was asked for ("answer from MODEL"). Models whose name starts with
`fail-NNN` answer status NNN; `slow-` waits 5 s before answering; `cut-` starts a stream and
closes the connection in its middle; `stall-` starts a stream and sends nothing more for 60 s; `bulk-N` streams N chat-completions chunks of 64 characters,
each written and flushed on its own as a model's tokens are (for benchmarks).
"""
import http.server
import json
import sys
import threading
import time

LOG = sys.argv[1]
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 0
lock = threading.Lock()

USAGE = {
    "messages": {"input_tokens": 11, "output_tokens": 7},
    "chat": {"prompt_tokens": 13, "completion_tokens": 5, "total_tokens": 18},
    "responses": {"input_tokens": 17, "output_tokens": 3, "total_tokens": 20},
}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes: without this, Nagle holds the body for an ACK.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def send(self, status, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def stream(self, events, cut=False, stall=False):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for index, (name, data) in enumerate(events):
            if stall and index == 2:
                self.wfile.flush()
                time.sleep(60)
                return
            if cut and index == 2:
                # Mid-answer, without the last chunk: the client sees the answer break off.
                self.wfile.flush()
                self.connection.shutdown(2)
                self.close_connection = True
                return
            event = ((f"event: {name}\n" if name else "") + "data: " + (
                data if isinstance(data, str) else json.dumps(data)) + "\n\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def do_GET(self):
        self.record({})
        self.send(200, {"object": "list", "data": [{"id": "stub-model", "object": "model"}]})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            request = json.loads(raw or b"{}")
        except ValueError:
            request = {}
        self.record(request)
        model = str(request.get("model", ""))
        if model.startswith("fail-"):
            self.send(int(model[5:8]), {"error": {"type": "stub", "message": f"{model} fails"}})
            return
        if model.startswith("slow-"):
            time.sleep(5)
        text = f"answer from {model}"
        stream = bool(request.get("stream"))
        cut = model.startswith("cut-")
        stall = model.startswith("stall-")
        if model.startswith("bulk-"):
            chunk = json.dumps({"id": "c1", "object": "chat.completion.chunk", "model": model,
                                "choices": [{"index": 0, "delta": {"content": "x" * 64}}]})
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            event = ("data: " + chunk + "\n\n").encode()
            framed = b"%x\r\n%s\r\n" % (len(event), event)
            send = self.connection.sendall
            for _ in range(int(model[5:])):
                send(framed)
            last = ("data: " + json.dumps({"id": "c1", "object": "chat.completion.chunk", "model": model,
                                           "choices": [], "usage": USAGE["chat"]}) + "\n\ndata: [DONE]\n\n").encode()
            send(b"%x\r\n%s\r\n0\r\n\r\n" % (len(last), last))
            return
        path = self.path.split("?")[0]
        if path.endswith("/messages"):
            if not stream:
                self.send(200, {"id": "msg_1", "type": "message", "role": "assistant", "model": model,
                                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                                "usage": USAGE["messages"]})
                return
            self.stream([
                ("message_start", {"type": "message_start", "message": {
                    "id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": [],
                    "usage": {"input_tokens": 11, "output_tokens": 1}}}),
                ("content_block_start", {"type": "content_block_start", "index": 0,
                                         "content_block": {"type": "text", "text": ""}}),
                ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                         "delta": {"type": "text_delta", "text": text}}),
                ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                   "usage": {"output_tokens": 7}}),
                ("message_stop", {"type": "message_stop"}),
            ], cut, stall)
        elif path.endswith("/chat/completions"):
            if not stream:
                self.send(200, {"id": "c1", "object": "chat.completion", "model": model, "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": USAGE["chat"]})
                return
            self.stream([
                (None, {"id": "c1", "object": "chat.completion.chunk", "model": model,
                        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
                (None, {"id": "c1", "object": "chat.completion.chunk", "model": model,
                        "choices": [{"index": 0, "delta": {"content": text}}]}),
                (None, {"id": "c1", "object": "chat.completion.chunk", "model": model,
                        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
                (None, {"id": "c1", "object": "chat.completion.chunk", "model": model, "choices": [],
                        "usage": USAGE["chat"]}),
                (None, "[DONE]"),
            ], cut, stall)
        elif path.endswith("/responses"):
            item = {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": text, "annotations": []}]}
            response = {"id": "resp_1", "object": "response", "model": model, "status": "completed",
                        "output": [item], "usage": USAGE["responses"]}
            where = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
            if not stream:
                self.send(200, response)
                return
            self.stream([
                ("response.created", {"type": "response.created",
                                      "response": dict(response, status="in_progress", usage=None)}),
                ("response.output_item.added", {"type": "response.output_item.added", "output_index": 0,
                                                "item": dict(item, status="in_progress", content=[])}),
                ("response.content_part.added", dict(where, type="response.content_part.added",
                                                     part={"type": "output_text", "text": "", "annotations": []})),
                ("response.output_text.delta", dict(where, type="response.output_text.delta", delta=text)),
                ("response.output_text.done", dict(where, type="response.output_text.done", text=text)),
                ("response.content_part.done", dict(where, type="response.content_part.done",
                                                    part=item["content"][0])),
                ("response.output_item.done", {"type": "response.output_item.done", "output_index": 0, "item": item}),
                ("response.completed", {"type": "response.completed", "response": response}),
            ], cut, stall)
        else:
            self.send(404, {"error": {"type": "not_found", "message": self.path}})

    def record(self, request):
        entry = {"method": self.command, "path": self.path,
                 "headers": {k.lower(): v for k, v in self.headers.items()}, "model": request.get("model"),
                 "userTexts": user_texts(request)}
        with lock:
            with open(LOG, "a") as log:
                log.write(json.dumps(entry) + "\n")


def user_texts(request):
    """The text of every user turn a request carries (Messages, chat completions or Responses), so
    a test can see that a resumed session sent the earlier conversation again."""
    turns = request.get("messages") or request.get("input") or []
    texts = []
    for turn in turns if isinstance(turns, list) else [{"role": "user", "content": turns}]:
        if not isinstance(turn, dict) or turn.get("role") != "user":
            continue
        content = turn.get("content")
        parts = content if isinstance(content, list) else [content]
        for part in parts:
            text = part if isinstance(part, str) else (part or {}).get("text") if isinstance(part, dict) else None
            if isinstance(text, str):
                texts.append(text[:200])
    return texts


class Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # A client that hangs up (a proxy dropping a pooled connection) is not news.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


server = Server(("127.0.0.1", PORT), Handler)
server.daemon_threads = True
print(server.server_address[1], flush=True)
server.serve_forever()
