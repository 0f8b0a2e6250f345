#!/usr/bin/env python3
"""A webhook receiver for the notification tests, on loopback.

Checks the signature as docs/guide/notifications.md tells receivers to, with Python's own hmac module:
X-Mailsec-Signature must be sha256=<hex HMAC-SHA256 of "<X-Mailsec-Timestamp>.<raw body>" with
SECRET>, the timestamp (Unix seconds) within --tolerance seconds (default 300) of this clock,
and the signature not one already accepted (a replay inside the tolerance). Writes every call to
DIR as N.json: {"n", "signature_ok", "fresh", "replay", "signature", "timestamp", "delivery",
"kind", "status", "rejected", "raw", "body"}. Answers 401 when the signature is wrong or the
timestamp stale ("rejected" says which), 409 to a replay, 503 to the first --fail-first calls
otherwise (to exercise retries), 200 otherwise. Prints "ready" once it listens.

  webhook_sink.py --port 8080 --dir /tmp/hooks --secret s3cret [--fail-first 2 [--fail-tenant T]] [--tolerance 300]
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
    # Only calls about this tenant count towards --fail-first (calls still pending for other
    # tenants of the same test binary must not use them up).
    p.add_argument("--fail-tenant", default=None)
    p.add_argument("--tolerance", type=int, default=300)
    a = p.parse_args()
    exit_with_parent()
    os.makedirs(a.dir, exist_ok=True)
    lock = threading.Lock()
    state = {"n": 0, "fail": a.fail_first}
    # Signatures accepted within the tolerance: the same one again is a replay.
    seen = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            got = self.headers.get("X-Mailsec-Signature", "")
            stamp = self.headers.get("X-Mailsec-Timestamp", "")
            now = time.time()
            try:
                ts = int(stamp)
            except ValueError:
                ts = None
            signed = stamp.encode() + b"." + raw
            want = "sha256=" + hmac.new(a.secret.encode(), signed, hashlib.sha256).hexdigest()
            ok = ts is not None and hmac.compare_digest(got, want)
            fresh = ts is not None and abs(now - ts) <= a.tolerance
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            about = (body or {}).get("tenant", {}).get("name") if isinstance(body, dict) else None
            counts = a.fail_tenant is None or about == a.fail_tenant
            with lock:
                for sig, at in list(seen.items()):
                    if now - at > 2 * a.tolerance:
                        del seen[sig]
                replay = ok and fresh and got in seen
                accepted = ok and fresh and not replay
                failing = accepted and counts and state["fail"] > 0
                if failing:
                    state["fail"] -= 1
                elif accepted:
                    seen[got] = now
                state["n"] += 1
                n = state["n"]
            if not ok:
                status, rejected = 401, "signature"
            elif not fresh:
                status, rejected = 401, "stale timestamp"
            elif replay:
                status, rejected = 409, "replay"
            else:
                status, rejected = (503 if failing else 200), None
            record = {
                "n": n,
                "signature_ok": ok,
                "fresh": fresh,
                "replay": replay,
                "rejected": rejected,
                "signature": got,
                "timestamp": stamp,
                "raw": raw.decode("utf-8", "replace"),
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
