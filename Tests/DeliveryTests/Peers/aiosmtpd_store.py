"""aiosmtpd_store.py - aiosmtpd requiring STARTTLS and AUTH, storing every message, for the engine's peer test.

Usage: aiosmtpd_store.py PORT CERT KEY OUTDIR
Listens on 127.0.0.1:PORT, requires STARTTLS, then AUTH (PLAIN or LOGIN as
alice / s3cret), and writes each message's content (as received, after the
server undid dot-stuffing) to OUTDIR/<n>.eml with its envelope recipients in
OUTDIR/<n>.rcpt. Stops on SIGTERM.
"""
import os
import signal
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Store:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.count += 1
            n = self.count
        content = envelope.original_content if envelope.original_content is not None else envelope.content
        with open(os.path.join(self.directory, "%d.eml" % n), "wb") as out:
            out.write(content)
        with open(os.path.join(self.directory, "%d.rcpt" % n), "w") as out:
            out.write("\n".join(envelope.rcpt_tos))
        return "250 2.0.0 Ok: stored %d" % n


def authenticator(server, session, envelope, mechanism, auth_data):
    good = isinstance(auth_data, LoginPassword) and auth_data.login == b"alice" and auth_data.password == b"s3cret"
    return AuthResult(success=good, handled=False)


def main():
    port, cert, key, directory = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    controller = Controller(Store(directory), hostname="127.0.0.1", port=port, tls_context=context,
                            require_starttls=True, authenticator=authenticator,
                            auth_required=True, auth_require_tls=True, decode_data=False)
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
