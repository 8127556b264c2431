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
#     Both SMTP servers are measured in two CPU layouts, each round running all four:
#       shared:    no pinning; server, smtp-source and the kernel share every CPU;
#       dedicated: the server on CPU SERVER_CPUS (default 0: `taskset -c`, which Postfix's
#                  master passes on to every daemon it starts), smtp-source on CLIENT_CPUS
#                  (default 1), the usual set-up of a load test, where the generator must
#                  not take its CPU from the system under test. Needs 2 CPUs; LAYOUTS=shared
#                  runs the first layout only.
# Medians over the rounds; the ratio is Carrier's median rate over Postfix's in one layout.
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
LAYOUTS=${LAYOUTS:-shared dedicated}
SERVER_CPUS=${SERVER_CPUS:-0}
CLIENT_CPUS=${CLIENT_CPUS:-1}

die() { echo "injection-vs-postfix.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (Postfix's master does)"
[ -x "$CARRIER" ] || die "no $CARRIER: run make release first"
[ -x /usr/sbin/smtp-source ] && [ -x /usr/sbin/postfix ] || die "Postfix is missing: apt-get install postfix (No configuration)"
command -v curl >/dev/null || die "curl is missing: apt-get install curl"
[[ "$MESSAGES" =~ ^[0-9]+$ && "$MESSAGES" -ge 100 ]] || die "MESSAGES must be a number >= 100"
[[ "$ROUNDS" =~ ^[0-9]+$ && "$ROUNDS" -ge 1 ]] || die "ROUNDS must be a positive number"
for layout in $LAYOUTS; do
    case $layout in
    shared) ;;
    dedicated) [ "$(nproc)" -ge 2 ] || die "the dedicated layout needs 2 CPUs (LAYOUTS=shared runs without it)"
               command -v taskset >/dev/null || die "taskset is missing: apt-get install util-linux" ;;
    *) die "unknown layout $layout (shared, dedicated)" ;;
    esac
done

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
# pin LAYOUT ROLE: the command prefix that puts ROLE (server, client) on its CPUs, or nothing
pin() {
    [ "$1" = dedicated ] || return 0
    if [ "$2" = server ]; then echo "taskset -c $SERVER_CPUS"; else echo "taskset -c $CLIENT_CPUS"; fi
}
inject() { # inject PORT LAYOUT: smtp-source's wall time in seconds
    local start end
    start=$(now)
    timeout "$TIMEOUT" $(pin "$2" client) /usr/sbin/smtp-source -d -s 50 -l 1000 -m "$MESSAGES" -f sender@bench.test -t rcpt@peer.test "127.0.0.1:$1" ||
        die "smtp-source failed against port $1"
    end=$(now)
    elapsed "$start" "$end"
}

carrier_round() { # carrier_round ROUND LAYOUT
    local round=$1 layout=$2 dir="$WORK/carrier-$1-$2" seconds pending
    mkdir -p "$dir"
    $(pin "$layout" server) "$CARRIER" serve --spool "$dir/spool" --hold --quiet --smtp-listen "127.0.0.1:$PORT_CARRIER" >"$dir/serve.log" 2>&1 &
    SERVE_PID=$!
    wait_port "$PORT_CARRIER"
    seconds=$(inject "$PORT_CARRIER" "$layout")
    kill -TERM "$SERVE_PID"; wait "$SERVE_PID" || die "carrier serve failed: $(cat "$dir/serve.log")"
    SERVE_PID=
    pending=$("$CARRIER" queue stats --spool "$dir/spool" --json | sed -n 's/.*"pending":\([0-9]*\).*/\1/p' | head -1)
    [ "$pending" = "$MESSAGES" ] || die "Carrier round $round: the spool holds $pending pending recipients, not $MESSAGES"
    rm -rf "$dir/spool"
    echo "$seconds"
}

postfix_round() { # postfix_round ROUND LAYOUT
    local round=$1 layout=$2 dir="$WORK/postfix-$1-$2" seconds count
    HOLD=1 NO_LOG=1 $(pin "$layout" server) "$HELPER" start "$dir" "$PORT_POSTFIX" maildir >/dev/null
    wait_port "$PORT_POSTFIX"
    seconds=$(inject "$PORT_POSTFIX" "$layout")
    count=$("$HELPER" queue-count "$dir")
    "$HELPER" stop "$dir" >/dev/null
    [ "$count" = "$MESSAGES" ] || die "Postfix round $round: the queue holds $count messages, not $MESSAGES"
    rm -rf "$dir"
    echo "$seconds"
}

echo "SMTP injection: $MESSAGES messages of 1000 octets, smtp-source -d -s 50, $ROUNDS rounds, layouts: $LAYOUTS" >&2
for layout in $LAYOUTS; do : >"$WORK/carrier-$layout.txt"; : >"$WORK/postfix-$layout.txt"; done
for round in $(seq 1 "$ROUNDS"); do
    for layout in $LAYOUTS; do
        c=$(carrier_round "$round" "$layout"); echo "$c" >>"$WORK/carrier-$layout.txt"
        p=$(postfix_round "$round" "$layout"); echo "$p" >>"$WORK/postfix-$layout.txt"
        printf '  round %d, %s: Carrier %.2f s (%.0f msg/s), Postfix %.2f s (%.0f msg/s)\n' "$round" "$layout" "$c" "$(echo "$MESSAGES / $c" | bc -l)" "$p" "$(echo "$MESSAGES / $p" | bc -l)" >&2
    done
done

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
for layout in $LAYOUTS; do
    CM=$(median <"$WORK/carrier-$layout.txt"); PM=$(median <"$WORK/postfix-$layout.txt")
    CR=$(echo "$MESSAGES / $CM" | bc -l); PR=$(echo "$MESSAGES / $PM" | bc -l)
    where=$([ "$layout" = dedicated ] && echo "server on CPU $SERVER_CPUS, smtp-source on CPU $CLIENT_CPUS" || echo "CPUs shared")
    printf '| SMTP injection, %d msgs, smtp-source -d -s 50 -l 1000, %s | %.0f msg/s (%.2f s) | %.0f msg/s (%.2f s) | %.1fx |\n' "$MESSAGES" "$where" "$CR" "$CM" "$PR" "$PM" "$(echo "$CR / $PR" | bc -l)"
done
printf '| HTTP: 10,000-recipient personalised campaign (%d-octet JSON), 200 after fdatasync | %.3f s | - | - |\n' "$SIZE" "$HM"
