#!/usr/bin/env python3
"""broken_starttls.py PORT RECORD - an SMTP receiver whose STARTTLS never works.

It offers STARTTLS; a client that asks gets "220 Ready" and then bytes that are no TLS
handshake, and the connection closes. A client that does not ask (plaintext) may send
mail: RECORD gets one JSON line per message, {"rcpt": [...], "starttls_tried": N}, N
the STARTTLS attempts seen before it.
"""
import asyncio
import json
import sys

PORT = int(sys.argv[1])
RECORD = sys.argv[2]
tried = 0


async def session(reader, writer):
    global tried
    rcpt = []
    writer.write(b"220 broken.test ESMTP\r\n")
    await writer.drain()
    while True:
        line = await reader.readline()
        if not line:
            break
        verb = line.decode("latin-1").strip().upper()
        if verb.startswith("EHLO"):
            writer.write(b"250-broken.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
        elif verb.startswith("STARTTLS"):
            tried += 1
            writer.write(b"220 2.0.0 Ready to start TLS\r\nthis is not a TLS server hello\r\n")
            await writer.drain()
            break
        elif verb.startswith("MAIL"):
            rcpt = []
            writer.write(b"250 2.1.0 Ok\r\n")
        elif verb.startswith("RCPT"):
            rcpt.append(verb.split(":", 1)[1].strip(" <>").lower())
            writer.write(b"250 2.1.5 Ok\r\n")
        elif verb == "DATA":
            writer.write(b"354 go ahead\r\n")
            await writer.drain()
            while (await reader.readline()) not in (b".\r\n", b""):
                pass
            with open(RECORD, "a") as f:
                f.write(json.dumps({"rcpt": rcpt, "starttls_tried": tried}) + "\n")
            writer.write(b"250 2.0.0 Ok: queued\r\n")
        elif verb.startswith("RSET") or verb.startswith("NOOP"):
            writer.write(b"250 2.0.0 Ok\r\n")
        elif verb.startswith("QUIT"):
            writer.write(b"221 2.0.0 Bye\r\n")
            await writer.drain()
            break
        else:
            writer.write(b"502 5.5.2 Error\r\n")
        await writer.drain()
    writer.close()


async def main():
    server = await asyncio.start_server(session, "127.0.0.1", PORT)
    async with server:
        await server.serve_forever()

asyncio.run(main())
