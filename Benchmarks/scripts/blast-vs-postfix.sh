#!/bin/sh
# blast-vs-postfix.sh - carrier blast and carrier sink side by side with Postfix's
# smtp-source and smtp-sink, on loopback, in one run.
#
# Usage: Benchmarks/scripts/blast-vs-postfix.sh [MESSAGES] [CONNECTIONS]
# (defaults: 200000 messages, 50 connections). Needs a release build of carrier
# (make release) and Postfix's smtp-sink/smtp-source (the script installs Postfix
# unconfigured when they are missing). Prints a Markdown table and leaves the raw
# outputs in $OUT (default /tmp/carrier-bench).
#
# Runs, each on a fresh sink:
#   1. smtp-source -> smtp-sink          1 KB   (the reference client)
#   2. carrier blast -> smtp-sink        1 KB   (client against client: bar 1)
#   3. carrier blast -> carrier sink     1 KB   (sink against sink: bar 2, with run 2)
#   4. carrier blast --chunking -> smtp-sink and -> carrier sink, 1 KB: the same client
#      offering BDAT (RFC 3030) where the server does; smtp-sink does not offer CHUNKING,
#      so against it the client uses DATA as in run 2
#   5. smtp-source -> smtp-sink, carrier blast -> smtp-sink and -> carrier sink with 50 KB
# CPU time is the client's own user+sys (/usr/bin/time); messages/s is messages over
# the client's wall time. Nothing here runs beyond loopback.
set -eu
cd "$(dirname "$0")/../.."
MESSAGES=${1:-200000}
CONNECTIONS=${2:-50}
OUT=${OUT:-/tmp/carrier-bench}
CARRIER=${CARRIER:-.build/release/carrier}
PORT_POSTFIX=${PORT_POSTFIX:-2526}
PORT_CARRIER=${PORT_CARRIER:-2527}
mkdir -p "$OUT"

if ! [ -x /usr/sbin/smtp-sink ] || ! [ -x /usr/sbin/smtp-source ]; then
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
fi
[ -x "$CARRIER" ] || { echo "no $CARRIER: run make release first" >&2; exit 1; }

SINK_PID=""
stop_sink() {
    if [ -n "$SINK_PID" ]; then kill "$SINK_PID" 2>/dev/null || true; wait "$SINK_PID" 2>/dev/null || true; fi
    SINK_PID=""
}
trap stop_sink EXIT INT TERM

# start_postfix_sink - smtp-sink on PORT_POSTFIX; its per-message counter goes to /dev/null.
start_postfix_sink() {
    /usr/sbin/smtp-sink -u nobody -c 127.0.0.1:$PORT_POSTFIX 1024 >/dev/null 2>&1 &
    SINK_PID=$!
    wait_port $PORT_POSTFIX
}

# start_carrier_sink - carrier sink on PORT_CARRIER, one thread per core.
start_carrier_sink() {
    "$CARRIER" sink --listen 127.0.0.1:$PORT_CARRIER --quiet >"$OUT/carrier-sink-$1.log" 2>&1 &
    SINK_PID=$!
    wait_port $PORT_CARRIER
}

# wait_port - until something accepts on 127.0.0.1:PORT (at most 10 s).
wait_port() {
    for _ in $(seq 1 100); do
        if python3 -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1',$1)))" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listening on port $1" >&2; exit 1
}

# timed NAME CMD... - run a client, keep "wall user sys" in $OUT/NAME.time. Its output is
# dropped: smtp-source prints a counter per message.
timed() {
    name=$1; shift
    /usr/bin/time -f "%e %U %S" -o "$OUT/$name.time" "$@" >/dev/null 2>&1
}

# row NAME LABEL SIZE - one Markdown row from a .time file.
row() {
    read -r wall user sys < "$OUT/$1.time"
    awk -v label="$2" -v wall="$wall" -v user="$user" -v sys="$sys" -v n="$MESSAGES" -v size="$3" 'BEGIN {
        rate = n / wall; cpu = (user + sys) / n * 1e6; mb = rate * size / 1048576
        printf "| %s | %.0f | %.1f | %.2f | %.1f |\n", label, rate, mb, cpu, wall }'
}


for size in 1000 51200; do
    start_postfix_sink
    timed "source-postfix-$size" /usr/sbin/smtp-source -d -s "$CONNECTIONS" -m "$MESSAGES" -l "$size" -c 127.0.0.1:$PORT_POSTFIX
    stop_sink
    start_postfix_sink
    timed "blast-postfix-$size" "$CARRIER" blast --to 127.0.0.1:$PORT_POSTFIX --connections "$CONNECTIONS" \
        --messages "$MESSAGES" --size "$size" --quiet --max-error-ratio 0 --json "$OUT/blast-postfix-$size.json"
    stop_sink
    start_carrier_sink "$size"
    timed "blast-carrier-$size" "$CARRIER" blast --to 127.0.0.1:$PORT_CARRIER --connections "$CONNECTIONS" \
        --messages "$MESSAGES" --size "$size" --quiet --max-error-ratio 0 --json "$OUT/blast-carrier-$size.json"
    stop_sink
    if [ "$size" = 1000 ]; then
        start_postfix_sink
        timed "chunking-postfix-$size" "$CARRIER" blast --to 127.0.0.1:$PORT_POSTFIX --connections "$CONNECTIONS" --chunking \
            --messages "$MESSAGES" --size "$size" --quiet --max-error-ratio 0 --json "$OUT/chunking-postfix-$size.json"
        stop_sink
        start_carrier_sink "chunking-$size"
        timed "chunking-carrier-$size" "$CARRIER" blast --to 127.0.0.1:$PORT_CARRIER --connections "$CONNECTIONS" --chunking \
            --messages "$MESSAGES" --size "$size" --quiet --max-error-ratio 0 --json "$OUT/chunking-carrier-$size.json"
        stop_sink
    fi
done

echo "| run ($MESSAGES messages, $CONNECTIONS connections) | messages/s | MB/s | client CPU µs/message | wall s |"
echo "|---|---|---|---|---|"
for size in 1000 51200; do
    row "source-postfix-$size" "smtp-source -> smtp-sink, $size B" "$size"
    row "blast-postfix-$size" "carrier blast -> smtp-sink, $size B" "$size"
    row "blast-carrier-$size" "carrier blast -> carrier sink, $size B" "$size"
    if [ "$size" = 1000 ]; then
        row "chunking-postfix-$size" "carrier blast --chunking -> smtp-sink (DATA: not offered), $size B" "$size"
        row "chunking-carrier-$size" "carrier blast --chunking -> carrier sink (BDAT), $size B" "$size"
    fi
done
