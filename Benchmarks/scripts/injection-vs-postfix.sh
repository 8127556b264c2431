#!/bin/bash
# injection-vs-postfix.sh - SMTP injection into Carrier's listener against Postfix's smtpd,
# side by side in one run, and the HTTP API's campaign acknowledgement time.
#
# Usage: Benchmarks/scripts/injection-vs-postfix.sh [MESSAGES] [ROUNDS]
# (defaults: 50000 messages, 3 rounds). Needs a release build of carrier (make release;
# this script never builds), Postfix (smtp-source and the daemons) and curl. Runs as root
# (Postfix's master does). Prints a Markdown table; KEEP=1 keeps the work directory.
#
# (1) SMTP: `smtp-source -d -s 50 -l 1000 -m MESSAGES` (50 sessions, each reusing its
#     connection, 1000-octet messages, one recipient each, no pipelining) against
#       Carrier: `carrier serve --hold --smtp-listen` over a fresh spool in fsync mode (the
#              default: every 250 follows the fdatasync of the group commit holding the
#              message); --hold: nothing is delivered, mail stays queued;
#       Postfix: a fresh private instance (postfix-instance.sh, HOLD=1: its queue manager is
#              off, so mail stays in the incoming queue; cleanup fsyncs each queue file
#              before smtpd answers 250; no log, as Carrier has none here).
#     Timed: smtp-source's wall time. Afterwards each queue is counted: it must hold
#     exactly MESSAGES messages, or the script fails. Rounds alternate Carrier and Postfix.
# (2) HTTP: one POST /api/inject/v1 of a 10,000-recipient personalised campaign (each
#     recipient with two substitutions, plus a top-level one) to `carrier serve --hold
#     --http-listen`, ROUNDS times against the same spool; timed by curl (time_total: from
#     connecting to the last byte of the 200, which is sent after the fdatasync).
# Medians over the rounds; the ratio is Carrier's median rate over Postfix's.
# Nothing leaves 127.0.0.0/8; every step is bounded by TIMEOUT seconds (default 600).
set -euo pipefail
cd "$(dirname "$0")/../.."
MESSAGES=${1:-50000}
ROUNDS=${2:-3}
CARRIER=${CARRIER:-$PWD/.build/release/carrier}
HELPER=$PWD/Benchmarks/scripts/postfix-instance.sh
PORT_CARRIER=${PORT_CARRIER:-2550}
PORT_POSTFIX=${PORT_POSTFIX:-2551}
PORT_HTTP=${PORT_HTTP:-2552}
TIMEOUT=${TIMEOUT:-600}
TOKEN=benchmark-token-0123456789

die() { echo "injection-vs-postfix.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (Postfix's master does)"
[ -x "$CARRIER" ] || die "no $CARRIER: run make release first"
[ -x /usr/sbin/smtp-source ] && [ -x /usr/sbin/postfix ] || die "Postfix is missing: apt-get install postfix (No configuration)"
command -v curl >/dev/null || die "curl is missing: apt-get install curl"
[[ "$MESSAGES" =~ ^[0-9]+$ && "$MESSAGES" -ge 100 ]] || die "MESSAGES must be a number >= 100"
[[ "$ROUNDS" =~ ^[0-9]+$ && "$ROUNDS" -ge 1 ]] || die "ROUNDS must be a positive number"

WORK=$(mktemp -d /tmp/injection-vs-postfix.XXXXXX)
chmod 755 "$WORK"     # Postfix daemons (postfix, nobody) reach their instance through it
SERVE_PID=
cleanup() {
    [ -n "$SERVE_PID" ] && kill -TERM "$SERVE_PID" 2>/dev/null && wait "$SERVE_PID" 2>/dev/null || true
    for dir in "$WORK"/postfix-*; do [ -d "$dir" ] && "$HELPER" stop "$dir" >/dev/null 2>&1 || true; done
    [ "${KEEP:-0}" = 1 ] && echo "work directory kept: $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
elapsed() { echo "$2 - $1" | bc -l; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
wait_port() {
    for _ in $(seq 1 100); do timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null && return 0; sleep 0.1; done
    die "nothing listens on 127.0.0.1:$1"
}
inject() { # inject PORT: smtp-source's wall time in seconds
    local start end
    start=$(now)
    timeout "$TIMEOUT" /usr/sbin/smtp-source -d -s 50 -l 1000 -m "$MESSAGES" -f sender@bench.test -t rcpt@peer.test "127.0.0.1:$1" ||
        die "smtp-source failed against port $1"
    end=$(now)
    elapsed "$start" "$end"
}

carrier_round() {
    local round=$1 dir="$WORK/carrier-$1" seconds pending
    mkdir -p "$dir"
    "$CARRIER" serve --spool "$dir/spool" --hold --quiet --smtp-listen "127.0.0.1:$PORT_CARRIER" >"$dir/serve.log" 2>&1 &
    SERVE_PID=$!
    wait_port "$PORT_CARRIER"
    seconds=$(inject "$PORT_CARRIER")
    kill -TERM "$SERVE_PID"; wait "$SERVE_PID" || die "carrier serve failed: $(cat "$dir/serve.log")"
    SERVE_PID=
    pending=$("$CARRIER" queue stats --spool "$dir/spool" --json | sed -n 's/.*"pending":\([0-9]*\).*/\1/p' | head -1)
    [ "$pending" = "$MESSAGES" ] || die "Carrier round $round: the spool holds $pending pending recipients, not $MESSAGES"
    rm -rf "$dir/spool"
    echo "$seconds"
}

postfix_round() {
    local round=$1 dir="$WORK/postfix-$1" seconds count
    HOLD=1 NO_LOG=1 "$HELPER" start "$dir" "$PORT_POSTFIX" maildir >/dev/null
    wait_port "$PORT_POSTFIX"
    seconds=$(inject "$PORT_POSTFIX")
    count=$("$HELPER" queue-count "$dir")
    "$HELPER" stop "$dir" >/dev/null
    [ "$count" = "$MESSAGES" ] || die "Postfix round $round: the queue holds $count messages, not $MESSAGES"
    rm -rf "$dir"
    echo "$seconds"
}

echo "SMTP injection: $MESSAGES messages of 1000 octets, smtp-source -d -s 50, $ROUNDS rounds" >&2
: >"$WORK/carrier.txt"; : >"$WORK/postfix.txt"
for round in $(seq 1 "$ROUNDS"); do
    c=$(carrier_round "$round"); echo "$c" >>"$WORK/carrier.txt"
    p=$(postfix_round "$round"); echo "$p" >>"$WORK/postfix.txt"
    printf '  round %d: Carrier %.2f s (%.0f msg/s), Postfix %.2f s (%.0f msg/s)\n' "$round" "$c" "$(echo "$MESSAGES / $c" | bc -l)" "$p" "$(echo "$MESSAGES / $p" | bc -l)" >&2
done
CM=$(median <"$WORK/carrier.txt"); PM=$(median <"$WORK/postfix.txt")
CR=$(echo "$MESSAGES / $CM" | bc -l); PR=$(echo "$MESSAGES / $PM" | bc -l)

echo "HTTP injection: one request with 10,000 personalised recipients, $ROUNDS times" >&2
python3 - "$WORK/campaign.json" <<'PY'
import json, sys
recipients = [{"email": f"user{i}@d{i % 100}.test", "substitutions": {"first_name": f"Name{i}", "n": i}} for i in range(10000)]
body = {"envelope_sender": "news@bench.test",
        "content": "From: News <news@bench.test>\r\nSubject: Hello {{first_name}}\r\n\r\nHello {{first_name}}, number {{n}}.\r\n{{footer}}\r\n",
        "recipients": recipients, "substitutions": {"footer": "Unsubscribe: https://bench.test/u"}}
json.dump(body, open(sys.argv[1], "w"))
PY
dir="$WORK/http"; mkdir -p "$dir"
"$CARRIER" serve --spool "$dir/spool" --hold --quiet --http-listen "127.0.0.1:$PORT_HTTP" --http-token "$TOKEN" >"$dir/serve.log" 2>&1 &
SERVE_PID=$!
wait_port "$PORT_HTTP"
: >"$WORK/http.txt"
for round in $(seq 1 "$ROUNDS"); do
    out=$(timeout "$TIMEOUT" curl -sS -o "$dir/response.json" -w '%{http_code} %{time_total}' -H "Authorization: Bearer $TOKEN" \
          -H 'Content-Type: application/json' --data-binary "@$WORK/campaign.json" "http://127.0.0.1:$PORT_HTTP/api/inject/v1")
    [ "${out%% *}" = 200 ] || die "HTTP round $round: status ${out%% *}: $(cat "$dir/response.json")"
    grep -q '"success_count":10000' "$dir/response.json" || die "HTTP round $round: $(cat "$dir/response.json")"
    echo "${out##* }" >>"$WORK/http.txt"
    printf '  round %d: %.3f s\n' "$round" "${out##* }" >&2
done
kill -TERM "$SERVE_PID"; wait "$SERVE_PID" || true; SERVE_PID=
pending=$("$CARRIER" queue stats --spool "$dir/spool" --json | sed -n 's/.*"pending":\([0-9]*\).*/\1/p' | head -1)
[ "$pending" = "$((10000 * ROUNDS))" ] || die "HTTP: the spool holds $pending pending recipients, not $((10000 * ROUNDS))"
HM=$(median <"$WORK/http.txt")
SIZE=$(stat -c %s "$WORK/campaign.json")

echo
echo "| measure (median of $ROUNDS) | Carrier | Postfix | ratio |"
echo "|---|---:|---:|---:|"
printf '| SMTP injection, %d msgs, smtp-source -d -s 50 -l 1000 | %.0f msg/s (%.2f s) | %.0f msg/s (%.2f s) | %.1fx |\n' "$MESSAGES" "$CR" "$CM" "$PR" "$PM" "$(echo "$CR / $PR" | bc -l)"
printf '| HTTP: 10,000-recipient personalised campaign (%d-octet JSON), 200 after fdatasync | %.3f s | - | - |\n' "$SIZE" "$HM"
