"""A slow upstream MTA for the gateway kill test (Debian's python3-aiosmtpd).

Usage: slow_upstream.py DIR PORT DELAY_MS FAIL_EVERY. Like upstream.py (each
accepted message becomes NNNNN.eml and NNNNN.json in DIR, the JSON only once
both are complete), but waits DELAY_MS before answering each MAIL FROM, so
that a relay of a few copies takes long enough for a SIGKILL of veto to land
in the middle of it, and answers every FAIL_EVERY-th DATA with a 451 (a
temporary failure; 0: never), keeping nothing of it. Accepts every recipient.
Prints "ready" once it listens.
"""

import asyncio
import json
import os
import sys
import time

from aiosmtpd.controller import Controller


class Handler:
    def __init__(self, out, delay, fail_every):
        self.out = out
        self.delay = delay
        self.fail_every = fail_every
        self.count = 0
        self.data = 0

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        await asyncio.sleep(self.delay)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_DATA(self, server, session, envelope):
        self.data += 1
        if self.fail_every and self.data % self.fail_every == 0:
            return "451 4.3.0 Try again later"
        # Written before the 250, as a real MTA queues before it answers:
        # a message on disk here was accepted.
        self.count += 1
        base = os.path.join(self.out, f"{self.count:05}")
        with open(base + ".eml", "wb") as f:
            f.write(envelope.original_content)
        with open(base + ".json.tmp", "w") as f:
            json.dump({"from": envelope.mail_from, "to": envelope.rcpt_tos}, f)
        os.rename(base + ".json.tmp", base + ".json")
        return "250 2.0.0 Ok: queued"


out, port = sys.argv[1], int(sys.argv[2])
delay_ms, fail_every = int(sys.argv[3]), int(sys.argv[4])
handler = Handler(out, delay_ms / 1000, fail_every)
controller = Controller(handler, hostname="127.0.0.1", port=port)
controller.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
