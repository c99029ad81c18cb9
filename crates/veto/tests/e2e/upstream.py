"""An upstream MTA for the end-to-end tests (Debian's python3-aiosmtpd).

Usage: upstream.py DIR PORT. Writes each message it accepts to DIR as
NNNNN.eml (the bytes as received) and NNNNN.json (envelope sender and
recipients). Refuses fay@… at RCPT with 550 5.1.1, like a server whose
mailbox is gone. Prints "ready" once it listens.
"""

import json
import os
import sys
import time

from aiosmtpd.controller import Controller


class Handler:
    def __init__(self, out):
        self.out = out
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("fay@"):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        base = os.path.join(self.out, f"{self.count:05}")
        with open(base + ".json.tmp", "w") as f:
            json.dump({"from": envelope.mail_from, "to": envelope.rcpt_tos}, f)
        with open(base + ".eml", "wb") as f:
            f.write(envelope.original_content)
        os.rename(base + ".json.tmp", base + ".json")
        return "250 2.0.0 Ok: queued"


out, port = sys.argv[1], int(sys.argv[2])
controller = Controller(Handler(out), hostname="127.0.0.1", port=port)
controller.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
