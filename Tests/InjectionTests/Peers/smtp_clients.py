#!/usr/bin/env python3
"""smtp_clients.py - real SMTP clients (Python's smtplib and raw sockets) against Carrier's listener.

Usage: smtp_clients.py SCENARIO HOST PORT [ARGS...]; prints one JSON object on stdout.
Scenarios:
  plain                      smtplib, no TLS, no AUTH: one message
  starttls USER PASS         smtplib: STARTTLS (certificate not verified), AUTH (smtplib picks PLAIN), one message
  login USER PASS            smtplib: AUTH LOGIN forced, no TLS (loopback allows it), one message
  badauth USER PASS          smtplib: AUTH PLAIN with a wrong password: the refusal
  noauth                     smtplib without AUTH: MAIL's reply (for a listener that requires AUTH)
  pipelined COUNT            raw socket: COUNT transactions, each MAIL/RCPT/RCPT/DATA in one write
  halfclose                  raw socket: one message, then shutdown(SHUT_WR) right after the final dot;
                             the reply must still come
  bdat                       raw socket: one message in two BDAT chunks (CHUNKING), pipelined
  hostile                    raw socket: one case per connection (see HOSTILE); replies by case
  idle COUNT [SEND]          opens COUNT connections and reads each greeting (codes counted); with
                             SEND=1 (default) then sends one message on a fresh connection while
                             they stay open
  fill COUNT SIZE            raw socket: up to COUNT messages of SIZE octets on one connection,
                             stopping at the first that is not accepted; each final reply
  dsn                        smtplib: one message with RET=HDRS ENVID=env+2B1 (xtext for "env+1")
                             to never@bounce.test (NOTIFY=NEVER), fail@bounce.test (NOTIFY=FAILURE,
                             ORCPT=rfc822;first@alias.test) and ok@good.test (NOTIFY=SUCCESS,FAILURE)
Each message's Subject and body carry the scenario name, so the test can find it in the spool.
"""
import json, resource, smtplib, socket, ssl, sys, time

def message(tag):
    return ("From: sender@client.test\r\nTo: rcpt@dest.test\r\nSubject: %s\r\n"
            "X-Carrier-Campaign: from-header\r\n\r\nbody of %s\r\n" % (tag, tag))

def done(result):
    print(json.dumps(result))
    sys.exit(0)

def smtp(host, port):
    return smtplib.SMTP(host, port, timeout=20)

def plain(host, port):
    with smtp(host, port) as s:
        refused = s.sendmail("sender@client.test", ["rcpt@dest.test"], message("plain"))
        done({"refused": refused, "last": s.noop()[0]})

def starttls(host, port, user, password):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtp(host, port) as s:
        s.ehlo()
        s.starttls(context=context)
        s.ehlo()
        code, _ = s.login(user, password)
        s.sendmail("sender@client.test", ["rcpt@dest.test"], message("starttls"))
        done({"auth": code, "tls": s.sock.version()})

def login(host, port, user, password):
    with smtp(host, port) as s:
        s.ehlo()
        s.user, s.password = user, password
        code, _ = s.auth("LOGIN", s.auth_login)
        s.sendmail("sender@client.test", ["rcpt@dest.test"], message("login"))
        done({"auth": code})

def badauth(host, port, user, password):
    with smtp(host, port) as s:
        s.ehlo()
        s.user, s.password = user, password
        try:
            s.auth("PLAIN", s.auth_plain)
            done({"auth": 235})
        except smtplib.SMTPAuthenticationError as error:
            done({"auth": error.smtp_code, "text": error.smtp_error.decode()})

def noauth(host, port):
    with smtp(host, port) as s:
        s.ehlo()
        code, text = s.mail("sender@client.test")
        done({"mail": code, "text": text.decode()})

class Raw:
    """A plain socket with SMTP reply reading."""
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=20)
        self.buffer = b""
    def send(self, data):
        self.sock.sendall(data)
    def reply(self):
        """One whole reply: (code, text of its last line); (0, reason) when the connection ends."""
        lines = []
        while True:
            while b"\r\n" not in self.buffer:
                try:
                    chunk = self.sock.recv(65536)
                except (ConnectionResetError, socket.timeout) as error:
                    return (0, type(error).__name__)
                if not chunk:
                    return (0, "closed")
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                return (int(line[:3]), line[4:].decode("utf-8", "replace"))
    def close(self):
        self.sock.close()

def pipelined(host, port, count):
    raw = Raw(host, port)
    replies = [raw.reply()]
    raw.send(b"EHLO client.test\r\n")
    replies.append(raw.reply())
    for n in range(int(count)):
        raw.send(b"MAIL FROM:<sender@client.test>\r\nRCPT TO:<a%d@dest.test>\r\nRCPT TO:<b%d@dest.test>\r\nDATA\r\n" % (n, n))
        replies += [raw.reply() for _ in range(4)]
        raw.send(message("pipelined %d" % n).encode() + b".\r\n")
        replies.append(raw.reply())
    raw.send(b"QUIT\r\n")
    replies.append(raw.reply())
    done({"codes": [code for code, _ in replies], "last_data": [text for code, text in replies if text.startswith("2.0.0 Ok: queued")]})

def halfclose(host, port):
    raw = Raw(host, port)
    replies = [raw.reply()]
    raw.send(b"EHLO client.test\r\n")
    replies.append(raw.reply())
    raw.send(b"MAIL FROM:<sender@client.test>\r\nRCPT TO:<half@dest.test>\r\nDATA\r\n")
    replies += [raw.reply() for _ in range(3)]
    raw.send(message("halfclose").encode() + b".\r\n")
    raw.sock.shutdown(socket.SHUT_WR)
    replies.append(raw.reply())
    replies.append(raw.reply())     # then the server closes: (0, "closed")
    done({"codes": [code for code, _ in replies]})

def bdat(host, port):
    raw = Raw(host, port)
    replies = [raw.reply()]
    raw.send(b"EHLO client.test\r\n")
    replies.append(raw.reply())
    first = message("bdat").encode()
    second = b"second chunk\r\n"
    raw.send(b"MAIL FROM:<sender@client.test>\r\nRCPT TO:<bdat@dest.test>\r\nBDAT %d\r\n" % len(first) + first
             + b"BDAT %d LAST\r\n" % len(second) + second)
    replies += [raw.reply() for _ in range(4)]
    raw.send(b"QUIT\r\n")
    replies.append(raw.reply())
    done({"codes": [code for code, _ in replies], "texts": [text for _, text in replies]})

# hostile cases: name -> bytes sent after EHLO; the replies read are what the test checks.
def hostile(host, port):
    results = {}
    def case(name, steps, greet=True):
        raw = Raw(host, port)
        out = [raw.reply()]
        if greet:
            raw.send(b"EHLO hostile.test\r\n")
            out.append(raw.reply())
        for data, replies in steps:
            if data:
                raw.send(data)
            out += [raw.reply() for _ in range(replies)]
        raw.close()
        results[name] = [code for code, _ in out]
    mail = b"MAIL FROM:<sender@client.test>\r\n"
    rcpt = b"RCPT TO:<rcpt@dest.test>\r\n"
    case("long_line", [(b"NOOP " + b"x" * (1 << 20) + b"\r\n", 1), (b"NOOP\r\n", 1)])
    case("invalid_utf8", [(b"MAIL FROM:<\xff\xfe@client.test>\r\n", 1), (b"NOOP\r\n", 1)])
    case("data_before_rcpt", [(mail, 1), (b"DATA\r\n", 1), (b"RSET\r\n", 1)])
    case("data_before_mail", [(b"DATA\r\n", 1)])
    case("bare_lf", [(mail + rcpt + b"DATA\r\n", 3), (b"Subject: bare\nline\r\n.\r\n", 1), (b"NOOP\r\n", 1)])
    # SMTP smuggling: LF.LF (and LF.CRLF) must not end the data; the message then has bare LFs
    # and is refused whole, so the smuggled MAIL/RCPT/DATA inside it are never commands.
    case("smuggling", [(mail + rcpt + b"DATA\r\n", 3),
                       (b"Subject: s\r\n\r\nhello\n.\nMAIL FROM:<evil@client.test>\r\nRCPT TO:<victim@dest.test>\r\nDATA\r\nsmuggled\r\n.\r\n", 1),
                       (b"NOOP\r\n", 1)])
    # STARTTLS command injection (CVE-2011-0411): plaintext pipelined after STARTTLS must be
    # dropped, so after the handshake RCPT finds no MAIL (503) and EHLO is answered normally.
    raw = Raw(host, port)
    codes = [raw.reply()[0]]
    raw.send(b"EHLO hostile.test\r\n")
    codes.append(raw.reply()[0])
    raw.send(b"STARTTLS\r\nMAIL FROM:<injected@client.test>\r\n")
    codes.append(raw.reply()[0])
    if codes[-1] == 220:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        raw.sock = context.wrap_socket(raw.sock)
        raw.buffer = b""
        raw.send(b"EHLO hostile.test\r\n")
        codes.append(raw.reply()[0])
        raw.send(b"RCPT TO:<rcpt@dest.test>\r\n")
        codes.append(raw.reply()[0])
    raw.close()
    results["starttls_pipelined"] = codes
    case("auth_bad_base64", [(b"AUTH PLAIN !!!notbase64!!!\r\n", 1), (b"NOOP\r\n", 1)])
    case("auth_unknown_mechanism", [(b"AUTH KERBEROS_V4\r\n", 1)])
    case("rcpt_before_mail", [(rcpt, 1)])
    case("mail_before_helo", [(mail, 1)], greet=False)
    case("unknown_command", [(b"FROB\r\n", 1)])
    case("size_too_big", [(b"MAIL FROM:<sender@client.test> SIZE=999999999999\r\n", 1)])
    case("bad_address", [(b"MAIL FROM:<no-at-sign>\r\n", 1)])
    case("null_byte", [(b"NOOP\x00\r\n", 1), (b"NOOP\r\n", 1)])
    done(results)

def fill(host, port, count, size):
    raw = Raw(host, port)
    raw.reply()
    raw.send(b"EHLO client.test\r\n")
    raw.reply()
    finals = []
    for n in range(int(count)):
        raw.send(b"MAIL FROM:<sender@client.test>\r\nRCPT TO:<fill%d@dest.test>\r\nDATA\r\n" % n)
        codes = [raw.reply()[0] for _ in range(3)]
        if codes[2] != 354:
            finals.append([codes[2], "no 354"])
            break
        raw.send(b"Subject: fill %d\r\n\r\n" % n + (b"x" * 998 + b"\r\n") * (int(size) // 1000) + b".\r\n")
        code, text = raw.reply()
        finals.append([code, text])
        if code != 250:
            break
    done({"finals": finals})

def idle(host, port, count, send="1"):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sockets, codes = [], {}
    started = time.time()
    for _ in range(int(count)):
        s = socket.create_connection((host, port), timeout=20)
        sockets.append(s)
    for s in sockets:
        data = b""
        try:
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except (ConnectionResetError, socket.timeout):
            pass
        code = data[:3].decode() or "none"
        codes[code] = codes.get(code, 0) + 1
    # The listener still serves a new client while they are all open.
    if send == "1":
        with smtp(host, port) as s:
            s.sendmail("sender@client.test", ["rcpt@dest.test"], message("idle"))
    result = {"codes": codes, "seconds": time.time() - started}
    for s in sockets:
        s.close()
    done(result)

def dsn(host, port):
    with smtp(host, port) as s:
        s.ehlo()
        replies = [s.mail("sender@client.test", ["RET=HDRS", "ENVID=env+2B1"])[0],
                   s.rcpt("never@bounce.test", ["NOTIFY=NEVER"])[0],
                   s.rcpt("fail@bounce.test", ["NOTIFY=FAILURE", "ORCPT=rfc822;first@alias.test"])[0],
                   s.rcpt("ok@good.test", ["NOTIFY=SUCCESS,FAILURE"])[0],
                   s.data(message("dsn"))[0]]
        done({"replies": replies})

if __name__ == "__main__":
    scenario, host, port, *rest = sys.argv[1:]
    globals()[scenario](host, int(port), *rest)
