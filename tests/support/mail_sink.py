#!/usr/bin/env python3
"""A real SMTP server for the notification tests (aiosmtpd), on loopback.

Every message it accepts is written to DIR as N.eml (the raw message) and N.json (envelope,
decoded headers and text, and received_at in Unix seconds), N counting from 1, before the server answers 250. Prints "ready"
once it listens; runs until killed.

  mail_sink.py --port 2525 --dir /tmp/mails [--hold-first 1 --hold-secs 30]

--hold-first N: for the first N messages, write them and then wait --hold-secs before answering
250, as a slow server would: a client killed meanwhile has sent the message without knowing it
was accepted.
"""
import argparse
import asyncio
import email
import email.policy
import json
import os
import signal
import sys
import threading
import time

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, directory, hold_first, hold_secs):
        self.directory = directory
        self.count = 0
        self.hold_first = hold_first
        self.hold_secs = hold_secs

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        n = self.count
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain",))
        record = {
            "n": n,
            "received_at": time.time(),
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "message_id": str(msg.get("Message-ID", "")),
            "from": str(msg.get("From", "")),
            "to": str(msg.get("To", "")),
            "reply_to": str(msg.get("Reply-To", "")),
            "subject": str(msg.get("Subject", "")),
            "auto_submitted": str(msg.get("Auto-Submitted", "")),
            "tenant": str(msg.get("X-Mailsec-Tenant", "")),
            "milestone": str(msg.get("X-Mailsec-Milestone", "")),
            "content_type": msg.get_content_type(),
            "charset": msg.get_content_charset() or "",
            "body": body.get_content() if body is not None else "",
        }
        path = os.path.join(self.directory, f"{n}")
        with open(path + ".eml.tmp", "wb") as f:
            f.write(raw)
        os.replace(path + ".eml.tmp", path + ".eml")
        with open(path + ".json.tmp", "w", encoding="utf-8") as f:
            json.dump(record, f, ensure_ascii=False)
        os.replace(path + ".json.tmp", path + ".json")
        if self.hold_first > 0:
            self.hold_first -= 1
            await asyncio.sleep(self.hold_secs)
        return "250 Message accepted for delivery"


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
    p.add_argument("--hold-first", type=int, default=0)
    p.add_argument("--hold-secs", type=float, default=30.0)
    a = p.parse_args()
    exit_with_parent()
    os.makedirs(a.dir, exist_ok=True)
    controller = Controller(
        Sink(a.dir, a.hold_first, a.hold_secs), hostname="127.0.0.1", port=a.port
    )
    # Signals are blocked (below) so that only this thread takes them, with sigwait.
    controller.start()
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    controller.stop()
    return 0


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    sys.exit(main())
