"""An SMTP sink for the campaign end-to-end tests (Debian's python3-aiosmtpd).

Usage: campaign_sink.py FILE PORT. For every message it accepts, appends one
JSON line to FILE: the time the DATA was accepted (Unix seconds, the clock
the test compares with), the envelope recipients, the Message-ID and the
List-Unsubscribe header. Prints "ready" once it listens.
"""

import json
import sys
import time
from email.parser import BytesHeaderParser

from aiosmtpd.controller import Controller


class Handler:
    def __init__(self, path):
        self.out = open(path, "a", buffering=1)

    async def handle_DATA(self, server, session, envelope):
        headers = BytesHeaderParser().parsebytes(envelope.original_content)
        line = {
            "t": time.time(),
            "to": envelope.rcpt_tos,
            "mid": headers.get("Message-ID", ""),
            "unsubscribe": headers.get("List-Unsubscribe", ""),
            "subject": headers.get("Subject", ""),
        }
        self.out.write(json.dumps(line) + "\n")
        self.out.flush()
        return "250 2.0.0 Ok: queued"


path, port = sys.argv[1], int(sys.argv[2])
controller = Controller(Handler(path), hostname="127.0.0.1", port=port)
controller.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
