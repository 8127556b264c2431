#!/usr/bin/env python3
"""pipeline_probe.py PORT RECORD - an SMTP receiver that checks cross-transaction pipelining.

It offers PIPELINING and, after each message's final dot, holds its reply until the
client has also sent the next transaction's DATA in the same group (RFC 2920 section
3.1 lets the next RSET/MAIL/RCPT/DATA follow the dot without waiting), or until one
second passes or the client says QUIT. RECORD gets one JSON line per message:
{"rcpt": [...], "followed": true} when the next transaction came without waiting.
A client that waits for the 250 before going on makes every message wait a second
and is recorded with "followed": false; the test counts them.

With a third argument, fail-first-data, the first session answers EHLO only after
0.3 s (so the client has queued more than one message on it) and its first DATA with
421, closing: a message that waited behind that one never reached the server.
"""
import asyncio
import json
import sys

PORT = int(sys.argv[1])
RECORD = sys.argv[2]
HOLD_SECONDS = 1.0
fail_pending = len(sys.argv) > 3 and sys.argv[3] == "fail-first-data"


async def session(reader, writer):
    global fail_pending
    failing = False          # the session that fails (the first to say EHLO)
    out = []                 # replies not yet written
    held = None              # the final reply of a message, held back
    held_rcpt = None
    rcpt = []
    in_data = False
    body = bytearray()

    def record(recipients, followed):
        with open(RECORD, "a") as f:
            f.write(json.dumps({"rcpt": recipients, "followed": followed}) + "\n")

    async def flush():
        if out:
            writer.write(b"".join(out))
            out.clear()
            await writer.drain()

    writer.write(b"220 probe.test ESMTP\r\n")
    await writer.drain()
    while True:
        try:
            line = await asyncio.wait_for(reader.readline(), HOLD_SECONDS if held else 30)
        except asyncio.TimeoutError:
            if held is None:
                break
            record(held_rcpt, False)
            out.insert(0, held)
            held = None
            await flush()
            continue
        if not line:
            break
        if in_data:
            if line == b".\r\n":
                in_data = False
                held, held_rcpt = b"250 2.0.0 Ok\r\n", rcpt
                rcpt = []
            else:
                body += line
            continue
        verb = line[:4].upper()
        if verb == b"EHLO":
            if fail_pending:
                fail_pending = False
                failing = True
                await asyncio.sleep(0.3)
            out.append(b"250-probe.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
        elif verb == b"RSET":
            out.append(b"250 2.0.0 Ok\r\n")
        elif verb == b"MAIL":
            out.append(b"250 2.1.0 Ok\r\n")
        elif verb == b"RCPT":
            rcpt.append(line.decode().strip()[8:].strip("<>"))
            out.append(b"250 2.1.5 Ok\r\n")
        elif verb == b"DATA" and failing:
            out.append(b"421 4.3.2 closing for a test\r\n")
            await flush()
            break
        elif verb == b"DATA":
            in_data = True
            out.append(b"354 go ahead\r\n")
            if held is not None:
                record(held_rcpt, True)
                out.insert(0, held)
                held = None
        elif verb == b"QUIT":
            if held is not None:
                record(held_rcpt, False)
                out.insert(0, held)
                held = None
            out.append(b"221 2.0.0 Bye\r\n")
            await flush()
            break
        else:
            out.append(b"500 5.5.2 unknown command\r\n")
        if held is None:
            await flush()
    writer.close()


async def main():
    server = await asyncio.start_server(session, "127.0.0.1", PORT)
    async with server:
        await server.serve_forever()


asyncio.run(main())
