"""A small JSON-RPC 2.0 client for rbdsnapd: one JSON object per line over
a Unix stream socket. Progress notifications (no `id`) come before a
request's answer; they are handed to a callback or skipped."""
import json
import socket


class RpcError(Exception):
    """An `error` answer: `code`, `kind` (data.kind) and the message."""

    def __init__(self, error):
        self.error = error
        self.code = error.get("code")
        self.kind = (error.get("data") or {}).get("kind")
        super().__init__(f"{self.kind or self.code}: {error.get('message')}")


class Client:
    """One connection; calls are sequential unless `send`/`read` are used."""

    def __init__(self, path, timeout=3600.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except BaseException:
            self.sock.close()
            raise
        self.buf = bytearray()
        self.next_id = 1

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, method, params=None):
        """Send one request; returns its id."""
        rid = self.next_id
        self.next_id += 1
        msg = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        return rid

    def read(self):
        """The next message (answer or notification)."""
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                line = bytes(self.buf[:end])
                del self.buf[:end + 1]
                return json.loads(line)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the daemon closed the connection")
            self.buf += chunk

    def answer(self, rid, on_progress=None):
        """Wait for request `rid`'s answer: its result, or RpcError."""
        while True:
            msg = self.read()
            if "id" not in msg:
                if on_progress is not None and msg.get("method") == "progress":
                    on_progress(msg.get("params") or {})
                continue
            if msg["id"] != rid:
                continue
            if "error" in msg:
                raise RpcError(msg["error"])
            return msg["result"]

    def call(self, method, params=None, on_progress=None):
        return self.answer(self.send(method, params), on_progress)
