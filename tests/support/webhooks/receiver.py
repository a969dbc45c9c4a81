"""A webhook receiver for tests: verifies every request with the Standard
Webhooks reference implementation (PyPI `standardwebhooks`), never with the
code under test, records it, and answers as told.

    receiver.py PORT

Control (JSON over HTTP on the same port):
  POST /control  {"mode": "ok" | "fail" | "gone" | "slow",
                  "secrets": ["whsec_…", …], "slow_seconds": 3}
  GET  /received  every request so far: id, timestamp, signature, body,
                  the indexes of the secrets that verified it, the
                  reference library's error per secret, the answer given,
                  and when it arrived (Unix seconds, float).
Any other POST is a webhook.
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

STATE = {"mode": "ok", "secrets": [], "slow_seconds": 3.0}
RECEIVED = []
LOCK = threading.Lock()

ANSWERS = {"ok": 200, "fail": 500, "gone": 410, "slow": 200}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _reply(self, status, body=b""):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path != "/received":
            return self._reply(404)
        with LOCK:
            body = json.dumps(RECEIVED).encode()
        self._reply(200, body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        data = self.rfile.read(length)
        if self.path == "/control":
            with LOCK:
                STATE.update(json.loads(data))
            return self._reply(204)
        arrived = time.time()
        with LOCK:
            mode = STATE["mode"]
            secrets = list(STATE["secrets"])
            slow = float(STATE["slow_seconds"])
        headers = {k: v for k, v in self.headers.items()}
        verified, errors = [], []
        for index, secret in enumerate(secrets):
            try:
                Webhook(secret).verify(data, headers)
                verified.append(index)
                errors.append(None)
            except WebhookVerificationError as e:
                errors.append(str(e))
        record = {
            "path": self.path,
            "id": self.headers.get("webhook-id"),
            "timestamp": self.headers.get("webhook-timestamp"),
            "signature": self.headers.get("webhook-signature"),
            "content_type": self.headers.get("Content-Type"),
            "body": data.decode("utf-8", "replace"),
            "verified_by": verified,
            "errors": errors,
            "mode": mode,
            "arrived": arrived,
        }
        with LOCK:
            RECEIVED.append(record)
        if mode == "slow":
            time.sleep(slow)
        try:
            self._reply(ANSWERS.get(mode, 500))
        except (BrokenPipeError, ConnectionResetError):
            pass


def main():
    port = int(sys.argv[1])
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
