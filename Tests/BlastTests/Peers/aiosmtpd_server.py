"""aiosmtpd_server.py - a Python aiosmtpd server with STARTTLS and AUTH, for carrier blast's peer test.

Usage: aiosmtpd_server.py PORT CERT KEY COUNTFILE
Listens on 127.0.0.1:PORT, requires STARTTLS, then AUTH (PLAIN or LOGIN as
alice / s3cret), accepts every message and counts it. On SIGTERM it stops and
writes the count to COUNTFILE.
"""
import signal
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Counter:
    def __init__(self):
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        return "250 2.0.0 Ok: counted"


def authenticator(server, session, envelope, mechanism, auth_data):
    good = isinstance(auth_data, LoginPassword) and auth_data.login == b"alice" and auth_data.password == b"s3cret"
    return AuthResult(success=good, handled=False)


def main():
    port, cert, key, count_file = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    counter = Counter()
    controller = Controller(counter, hostname="127.0.0.1", port=port, tls_context=context,
                            require_starttls=True, authenticator=authenticator,
                            auth_required=True, auth_require_tls=True)
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    controller.stop()
    with open(count_file, "w") as out:
        out.write(str(counter.count))


if __name__ == "__main__":
    main()
