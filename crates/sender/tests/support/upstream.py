"""A real SMTP server for veto's end-to-end tests: aiosmtpd, saving what it
receives.

    /usr/bin/python3 upstream.py PORT DIR [--tls CERT KEY] [--auth USER PASSWORD]

Each message N is saved as DIR/N.eml (the content exactly as received,
after the transparency dots are removed) and then DIR/N.json (the envelope
and whether the session was over TLS and authenticated). Prints "ready"
once it accepts connections; stops when standard input closes.
"""

import json
import os
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def main():
    port, out = int(sys.argv[1]), sys.argv[2]
    rest = sys.argv[3:]
    cert = key = user = password = None
    while rest:
        if rest[0] == "--tls":
            cert, key, rest = rest[1], rest[2], rest[3:]
        elif rest[0] == "--auth":
            user, password, rest = rest[1], rest[2], rest[3:]
        else:
            sys.exit("unknown argument " + rest[0])

    class Handler:
        count = 0

        async def handle_DATA(self, server, session, envelope):
            Handler.count += 1
            base = os.path.join(out, str(Handler.count))
            with open(base + ".eml", "wb") as f:
                f.write(envelope.original_content)
            with open(base + ".tmp", "w") as f:
                json.dump(
                    {
                        "from": envelope.mail_from,
                        "to": envelope.rcpt_tos,
                        "mail_options": envelope.mail_options,
                        "tls": session.ssl is not None,
                        "authenticated": session.authenticated,
                    },
                    f,
                )
            os.rename(base + ".tmp", base + ".json")
            return "250 2.0.0 Ok: queued as aiosmtpd-%d" % Handler.count

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        return AuthResult(success=ok)

    options = {}
    if cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        options.update(tls_context=context, require_starttls=True)
    if user:
        options.update(authenticator=authenticator, auth_required=True)
    controller = Controller(
        Handler(), hostname="127.0.0.1", port=port, server_hostname="localhost", **options
    )
    controller.start()
    print("ready", flush=True)
    sys.stdin.read()
    controller.stop()


main()
