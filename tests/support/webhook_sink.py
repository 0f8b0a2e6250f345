#!/usr/bin/env python3
"""A webhook receiver for the notification tests, on loopback.

Checks X-Mailsec-Signature (sha256=<hex HMAC-SHA256 of the body with SECRET>) with Python's own
hmac module, and writes every call to DIR as N.json: {"n", "signature_ok", "signature",
"delivery", "kind", "status", "body"}. Answers 503 to the first --fail-first calls (to exercise
retries), 401 when the signature is wrong, 200 otherwise. Prints "ready" once it listens.

  webhook_sink.py --port 8080 --dir /tmp/hooks --secret s3cret [--fail-first 2]
"""
import argparse
import hashlib
import hmac
import json
import os
import sys
import time
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def exit_with_parent():
    """Exit when the test process that started us is gone (it may never stop us itself)."""
    parent = os.getppid()

    def watch():
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--fail-first", type=int, default=0)
    a = p.parse_args()
    exit_with_parent()
    os.makedirs(a.dir, exist_ok=True)
    lock = threading.Lock()
    state = {"n": 0, "fail": a.fail_first}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            got = self.headers.get("X-Mailsec-Signature", "")
            want = "sha256=" + hmac.new(a.secret.encode(), raw, hashlib.sha256).hexdigest()
            ok = hmac.compare_digest(got, want)
            with lock:
                state["n"] += 1
                n = state["n"]
                failing = state["fail"] > 0
                if failing:
                    state["fail"] -= 1
            status = 401 if not ok else (503 if failing else 200)
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            record = {
                "n": n,
                "signature_ok": ok,
                "signature": got,
                "delivery": self.headers.get("X-Mailsec-Delivery", ""),
                "kind": self.headers.get("X-Mailsec-Milestone-Kind", ""),
                "content_type": self.headers.get("Content-Type", ""),
                "status": status,
                "body": body,
            }
            path = os.path.join(a.dir, f"{n}.json")
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                json.dump(record, f, ensure_ascii=False)
            os.replace(path + ".tmp", path)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    print("ready", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
