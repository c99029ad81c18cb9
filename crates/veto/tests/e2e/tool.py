"""A sending tool for the end-to-end tests: Python's smtplib.

Usage: tool.py PORT MESSAGE_ID RCPT[,RCPT...]. Sends one multipart/alternative
marketing message (non-ASCII, quoted-printable HTML) to every recipient in
one transaction and prints, as JSON, the reply to each RCPT and to DATA.
"""

import json
import smtplib
import sys
from email import policy
from email.message import EmailMessage

port, message_id, rcpts = int(sys.argv[1]), sys.argv[2], sys.argv[3].split(",")

msg = EmailMessage()
msg["From"] = "Shop <news@shop.example>"
msg["To"] = "customers@shop.example"
msg["Subject"] = "Spring sale — 20% off"
msg["Message-ID"] = message_id
msg.set_content("Spring is here: 20% off everything. Café prices!\n")
msg.add_alternative(
    "<html><body><p>Spring is here: <b>20% off</b> everything. Café prices!</p></body></html>\n",
    subtype="html",
)

replies = {"rcpt": {}}
with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
    s.ehlo("tool.example")
    code, text = s.mail("news@shop.example")
    replies["mail"] = [code, text.decode()]
    accepted = 0
    for r in rcpts:
        code, text = s.rcpt(r)
        replies["rcpt"][r] = [code, text.decode()]
        accepted += code == 250
    if accepted:
        code, text = s.data(msg.as_bytes(policy=policy.SMTP))
        replies["data"] = [code, text.decode()]
print(json.dumps(replies))
