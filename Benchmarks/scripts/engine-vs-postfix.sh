#!/bin/bash
# engine-vs-postfix.sh - carrier serve against Postfix as a relay, side by side in one
# run: the same messages, the same receiver (Postfix's smtp-sink), on loopback.
#
# Usage: Benchmarks/scripts/engine-vs-postfix.sh [MESSAGES] [SIZE]
# (defaults: 200000 messages of 1000 octets). Needs a release build of carrier (make
# release; this script never builds) and Postfix (apt-get install postfix; the daemons
# and smtp-source/smtp-sink). Runs as root (Postfix's master does). Prints a Markdown
# table; KEEP=1 keeps the work directory (logs, sink counters) instead of removing it.
#
# Every message has one recipient, userN@dK.test with K = N mod 100 (100 domains
# d0.test..d99.test), and is SIZE octets as sent by the MTA's client before the MTA adds
# its own trace headers (Received, Message-ID...). Runs, each against a fresh smtp-sink:
#   (a) delivery only, from a full queue.
#       Postfix: a private instance (postfix-instance.sh) relaying everything to the sink,
#       held (its queue manager disabled) while smtp-source fills the queue over SMTP;
#       timed from the release (qmgr starts and scans the queue) until the queue is empty
#       (polled every 100 ms).
#       Carrier: `carrier campaign` fills a spool (one template with a {{n}} merge field,
#       so every recipient gets its own rendering, fsync durability); timed: `carrier serve
#       --drain` over it (its wall time, from exec to exit).
#   (b) end to end, the same input for both: the same smtp-source sessions over SMTP.
#       Postfix: from the start of injection (smtp-source, not held) until the queue is
#       empty; receiving and delivering overlap.
#       Carrier: `carrier serve --smtp-listen` (fsync spool) delivering as it receives;
#       from the start of injection until the sink has counted every message (polled
#       every 100 ms), then SIGTERM.
# Concurrency: Postfix's default_destination_concurrency_limit and Carrier's site
# max_connections (a shaping file) are both CONCURRENCY (default 50); with one relay host
# or one '*' route that is the number of parallel connections to the sink. Both start at
# 5 and grow by slow start. Injection uses SESSIONS (default 50) smtp-source sessions.
# Both MTAs log their deliveries to a file (Postfix's maillog_file, carrier --log);
# NO_LOG=1 turns both off.
# CPU time: user+sys from /proc (Postfix: the master plus every daemon it ran, through the
# master's reaped-children times; the sink: its own) and /usr/bin/time (carrier).
# "sink CPU % of wall" near 100 means the single-process smtp-sink was the bottleneck.
# Every phase is bounded by TIMEOUT seconds (default 1800). Nothing leaves 127.0.0.0/8.
set -euo pipefail
cd "$(dirname "$0")/../.."
MESSAGES=${1:-200000}
SIZE=${2:-1000}
CARRIER=${CARRIER:-$PWD/.build/release/carrier}
HELPER=$PWD/Benchmarks/scripts/postfix-instance.sh
CONCURRENCY=${CONCURRENCY:-50}
SESSIONS=${SESSIONS:-50}
PORT_SINK=${PORT_SINK:-2540}
PORT_POSTFIX=${PORT_POSTFIX:-2541}
PORT_CARRIER=${PORT_CARRIER:-2542}
TIMEOUT=${TIMEOUT:-1800}
NO_LOG=${NO_LOG:-0}
export CONCURRENCY NO_LOG

die() { echo "engine-vs-postfix.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (Postfix's master does)"
[ -x "$CARRIER" ] || die "no $CARRIER: run make release first"
[ -x /usr/sbin/smtp-sink ] && [ -x /usr/sbin/smtp-source ] && [ -x /usr/sbin/postfix ] ||
    die "Postfix is missing: apt-get install postfix (No configuration)"
[[ "$MESSAGES" =~ ^[0-9]+$ && "$MESSAGES" -ge 100 ]] || die "MESSAGES must be a number >= 100"
[[ "$SIZE" =~ ^[0-9]+$ && "$SIZE" -ge 200 ]] || die "SIZE must be a number >= 200"
[ "$SESSIONS" -le 100 ] || die "SESSIONS is at most 100 (one smtp-source per domain)"

WORK=$(mktemp -d /tmp/engine-vs-postfix.XXXXXX)
chmod 755 "$WORK"           # Postfix's daemons run as postfix and reach it by path
TICK=$(getconf CLK_TCK)

# Everything started here is tracked by process id and stopped on any exit.
SINK_PID="" SAMPLER_PID="" JOB_PID="" SERVE_PID="" PF_DIRS=()
cleanup() {
    local rc=$?
    stop_sampler
    if [ -n "$SERVE_PID" ]; then kill "$SERVE_PID" 2>/dev/null || true; wait "$SERVE_PID" 2>/dev/null || true; fi
    if [ -n "$JOB_PID" ]; then kill -- -"$JOB_PID" 2>/dev/null || true; wait "$JOB_PID" 2>/dev/null || true; fi
    for dir in "${PF_DIRS[@]}"; do "$HELPER" stop "$dir" || true; done
    stop_sink
    if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
# calc EXPR - floating-point arithmetic.
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }

# ticks PID... - user+sys CPU clock ticks of the processes, their reaped children
# included (fields 14-17 of /proc/PID/stat, counted after the ")" of the name).
ticks() {
    local p
    for p in "$@"; do cat "/proc/$p/stat" 2>/dev/null || true; done |
        sed 's/.*) //' | awk '{ t += $12 + $13 + $14 + $15 } END { print t + 0 }'
}

# postfix_ticks DIR - CPU of a Postfix instance so far: its master, with every daemon it
# has reaped (they exit after max_use or max_idle), plus the daemons running now.
postfix_ticks() {
    local master
    master=$(tr -d ' \n' < "$1/queue/pid/master.pid")
    ticks "$master" $(pgrep -P "$master" || true)
}

# start_sink NAME - a fresh smtp-sink on PORT_SINK; its running counter (one update per
# session and per message) goes to $WORK/sink-NAME.out.
start_sink() {
    /usr/sbin/smtp-sink -u nobody -c 127.0.0.1:$PORT_SINK 1000 > "$WORK/sink-$1.out" 2>&1 &
    SINK_PID=$!
    for _ in $(seq 1 100); do
        if timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT_SINK" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "smtp-sink does not listen on 127.0.0.1:$PORT_SINK"
}
stop_sink() {
    if [ -n "$SINK_PID" ]; then kill "$SINK_PID" 2>/dev/null || true; wait "$SINK_PID" 2>/dev/null || true; fi
    SINK_PID=""
}
# sink_messages NAME - messages the sink of run NAME has received (its last "mesg=").
sink_messages() {
    tr '\r' '\n' < "$WORK/sink-$1.out" | sed -n 's/.*mesg=\([0-9]*\).*/\1/p' | tail -1
}

# wait_sink NAME COUNT - poll the sink of run NAME every 100 ms until it has COUNT messages.
wait_sink() {
    local got
    for ((i = 0; i < TIMEOUT * 10; i++)); do
        got=$(tail -c 300 "$WORK/sink-$1.out" | tr '\r' '\n' | sed -n 's/.*mesg=\([0-9]*\).*/\1/p' | tail -1)
        [ "${got:-0}" -ge "$2" ] && return 0
        sleep 0.1
    done
    die "the sink of $1 has ${got:-0} of $2 messages after $TIMEOUT s"
}

# start_sampler NAME - every 0.25 s, the number of connections established to the sink;
# the peak goes to $WORK/conns-NAME.
start_sampler() {
    local file="$WORK/conns-$1"
    echo 0 > "$file"
    (
        max=0
        for ((i = 0; i < TIMEOUT * 4; i++)); do
            n=$(ss -Htn state established "( dport = :$PORT_SINK )" 2>/dev/null | wc -l)
            if [ "$n" -gt "$max" ]; then max=$n; echo "$max" > "$file"; fi
            sleep 0.25
        done
    ) &
    SAMPLER_PID=$!
}
stop_sampler() {
    if [ -n "$SAMPLER_PID" ]; then kill "$SAMPLER_PID" 2>/dev/null || true; wait "$SAMPLER_PID" 2>/dev/null || true; fi
    SAMPLER_PID=""
}

# run_job NAME CMD... - run a command in its own process group (so the trap can stop all
# of it), bounded by TIMEOUT, with "wall user sys" of it and its children in
# $WORK/NAME.time and its output in $WORK/NAME.out.
run_job() {
    local name=$1; shift
    setsid /usr/bin/time -f "%e %U %S" -o "$WORK/$name.time" timeout "$TIMEOUT" "$@" > "$WORK/$name.out" 2>&1 &
    JOB_PID=$!
    local rc=0
    wait "$JOB_PID" || rc=$?
    JOB_PID=""
    if [ "$rc" != 0 ]; then tail -5 "$WORK/$name.out" >&2; die "$name failed (exit $rc)"; fi
}

# wait_empty DIR - poll the Postfix queue every 100 ms until it is empty (bounded). This
# is `postfix-instance.sh queue-empty` inlined: a find that stops at the first queue file,
# without a bash start per poll (17 ms of CPU each, measured, on the cores being timed).
wait_empty() {
    local q=$1/queue
    for ((i = 0; i < TIMEOUT * 10; i++)); do
        [ -z "$(find "$q/incoming" "$q/active" "$q/deferred" "$q/hold" "$q/maildrop" -type f -print -quit)" ] && return 0
        sleep 0.1
    done
    die "the queue of $1 still holds $("$HELPER" queue-count "$1") messages after $TIMEOUT s"
}

# ---- the messages ----------------------------------------------------------------------
# One message, SIZE octets on the wire (CRLF line ends): From, To, Subject (the message
# number, zero-padded so every message has the same size) and a body of 76-character
# lines padded to SIZE. template.eml is Carrier's (Subject: {{n}}); message.txt is
# smtp-source's -F file (LF; smtp-source sends CRLF) with a fixed number.
WIDTH=${#MESSAGES}
ZERO=$(printf "%0${WIDTH}d" 0)
make_message() {    # make_message SUBJECT LINE-END
    local subject=$1 eol=$2
    awk -v size="$SIZE" -v subject="$subject" -v eol="$eol" 'BEGIN {
        head = "From: <sender@bench.test>" eol "To: <recipient@bench.test>" eol "Subject: " subject eol eol
        # Octets on the wire: every line ends in CRLF (2 octets).
        used = length(head) + (eol == "\n" ? 4 : 0)
        printf "%s", head
        line = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
        while (size - used > 78) { printf "%s%s", line, eol; used += 78 }
        rest = size - used - 2; if (rest < 0) rest = 0
        printf "%s%s", substr(line "xx", 1, rest), eol
    }'
}
# The template's Subject is the {{n}} placeholder: same width once rendered.
make_message "$ZERO" $'\r\n' | sed "s/^Subject: $ZERO/Subject: {{n}}/" > "$WORK/template.eml"
make_message "$ZERO" $'\n' > "$WORK/message.txt"
# list.csv: email,n - row N (from 0) is userN@d(N mod 100).test.
awk -v n="$MESSAGES" -v w="$WIDTH" 'BEGIN {
    print "email,n"
    for (i = 0; i < n; i++) printf "user%d@d%d.test,%0" w "d\n", i, i % 100, i
}' > "$WORK/list.csv"

# Carrier's shaping: the same connection ceiling as Postfix's destination concurrency.
printf '[defaults]\nmax_connections = %d\n' "$CONCURRENCY" > "$WORK/shaping.toml"

# inject.sh PORT - SESSIONS parallel smtp-source sessions into Postfix's smtpd; session J
# sends the messages of domains J, J+SESSIONS, ... one domain after the other (smtp-source
# has a single -t recipient per run; -N makes each recipient unique: 1user@dK.test,
# 2user@dK.test, ...), with as many messages per domain as list.csv has.
cat > "$WORK/inject.sh" <<EOF
#!/bin/bash
set -u
port=\$1
base=\$(($MESSAGES / 100)) rem=\$(($MESSAGES % 100))
pids=()
for ((j = 0; j < $SESSIONS; j++)); do
    (
        for ((k = j; k < 100; k += $SESSIONS)); do
            count=\$((base + (k < rem ? 1 : 0)))
            [ "\$count" -gt 0 ] || continue
            /usr/sbin/smtp-source -d -N -s 1 -m "\$count" -F "$WORK/message.txt" \\
                -f sender@bench.test -t "user@d\$k.test" "127.0.0.1:\$port" > /dev/null || exit 1
        done
    ) &
    pids+=(\$!)
done
rc=0
for pid in "\${pids[@]}"; do wait "\$pid" || rc=1; done
exit \$rc
EOF
chmod +x "$WORK/inject.sh"

# results: NAME -> "wall mta_cpu_s sink_cpu_s sink_messages peak_connections"
declare -A RESULT
record() {  # record NAME WALL MTA_TICKS_OR_SECONDS SINK_TICKS
    RESULT[$1]="$2 $3 $(calc "$4 / $TICK") $(sink_messages "$1") $(cat "$WORK/conns-$1" 2>/dev/null || echo -)"
}
carrier_log() { [ "$NO_LOG" = 1 ] || echo "--log=$WORK/$1-delivery.log"; }
job_cpu() { awk '{ printf "%.2f", $2 + $3 }' "$WORK/$1.time"; }
job_wall() { awk '{ print $1 }' "$WORK/$1.time"; }

echo "engine-vs-postfix: $MESSAGES messages x $SIZE octets, 100 domains, concurrency $CONCURRENCY," \
     "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# ---- (a) Postfix: delivery from a full queue ---------------------------------------------
echo "(a) Postfix: filling the held queue..." >&2
PF_DIRS+=("$WORK/pf-a")
HOLD=1 "$HELPER" start "$WORK/pf-a" $PORT_POSTFIX relay 127.0.0.1:$PORT_SINK
pf0=$(postfix_ticks "$WORK/pf-a")
run_job fill-postfix "$WORK/inject.sh" $PORT_POSTFIX
FILL_POSTFIX_CPU=$(calc "($(postfix_ticks "$WORK/pf-a") - $pf0) / $TICK")
queued=$("$HELPER" queue-count "$WORK/pf-a")
[ "$queued" = "$MESSAGES" ] || die "Postfix queued $queued of $MESSAGES messages"
echo "(a) Postfix: delivering..." >&2
start_sink a-postfix
start_sampler a-postfix
sink0=$(ticks $SINK_PID); pf0=$(postfix_ticks "$WORK/pf-a"); t0=$(now)
"$HELPER" release "$WORK/pf-a"
wait_empty "$WORK/pf-a"
t1=$(now); sink1=$(ticks $SINK_PID); pf1=$(postfix_ticks "$WORK/pf-a")
stop_sampler
record a-postfix "$(calc "$t1 - $t0")" "$(calc "($pf1 - $pf0) / $TICK")" "$((sink1 - sink0))"
[ "$NO_LOG" = 1 ] || cp "$WORK/pf-a/log/maillog" "$WORK/maillog-a" 2>/dev/null || true
"$HELPER" stop "$WORK/pf-a"
stop_sink

# ---- (a) Carrier: delivery from a full spool ---------------------------------------------
echo "(a) Carrier: filling the spool..." >&2
run_job fill-carrier "$CARRIER" campaign --spool "$WORK/carrier-a/Queue" --from sender@bench.test \
    --template "$WORK/template.eml" --recipients "$WORK/list.csv" --durability fsync
echo "(a) Carrier: delivering..." >&2
start_sink a-carrier
start_sampler a-carrier
sink0=$(ticks $SINK_PID)
run_job serve-a "$CARRIER" serve --spool "$WORK/carrier-a/Queue" --route "*=127.0.0.1:$PORT_SINK" \
    --no-dns --drain --quiet --timeout "$TIMEOUT" --shaping "$WORK/shaping.toml" $(carrier_log a)
sink1=$(ticks $SINK_PID)
stop_sampler
record a-carrier "$(job_wall serve-a)" "$(job_cpu serve-a)" "$((sink1 - sink0))"
stop_sink

# ---- (b) Postfix: end to end ---------------------------------------------------------------
echo "(b) Postfix: injecting and delivering..." >&2
start_sink b-postfix
PF_DIRS+=("$WORK/pf-b")
"$HELPER" start "$WORK/pf-b" $PORT_POSTFIX relay 127.0.0.1:$PORT_SINK
start_sampler b-postfix
sink0=$(ticks $SINK_PID); pf0=$(postfix_ticks "$WORK/pf-b"); t0=$(now)
run_job inject-b "$WORK/inject.sh" $PORT_POSTFIX
wait_empty "$WORK/pf-b"
t1=$(now); sink1=$(ticks $SINK_PID); pf1=$(postfix_ticks "$WORK/pf-b")
stop_sampler
record b-postfix "$(calc "$t1 - $t0")" "$(calc "($pf1 - $pf0) / $TICK")" "$((sink1 - sink0))"
[ "$NO_LOG" = 1 ] || cp "$WORK/pf-b/log/maillog" "$WORK/maillog-b" 2>/dev/null || true
"$HELPER" stop "$WORK/pf-b"
stop_sink

# ---- (b) Carrier: end to end through the SMTP listener -----------------------------------
echo "(b) Carrier: injecting over SMTP and delivering..." >&2
start_sink b-carrier
start_sampler b-carrier
"$CARRIER" serve --spool "$WORK/carrier-b/Queue" --route "*=127.0.0.1:$PORT_SINK" --no-dns --quiet \
    --shaping "$WORK/shaping.toml" --smtp-listen "127.0.0.1:$PORT_CARRIER" $(carrier_log b) > "$WORK/serve-b.out" 2>&1 &
SERVE_PID=$!
for _ in $(seq 1 100); do timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT_CARRIER" 2>/dev/null && break; sleep 0.1; done
sink0=$(ticks $SINK_PID); c0=$(ticks $SERVE_PID); t0=$(now)
run_job inject-b-carrier "$WORK/inject.sh" $PORT_CARRIER
wait_sink b-carrier "$MESSAGES"
t1=$(now); sink1=$(ticks $SINK_PID); c1=$(ticks $SERVE_PID)
stop_sampler
kill -TERM "$SERVE_PID"; wait "$SERVE_PID" || die "carrier serve (b) failed: $(tail -5 "$WORK/serve-b.out")"
SERVE_PID=""
record b-carrier "$(calc "$t1 - $t0")" "$(calc "($c1 - $c0) / $TICK")" "$((sink1 - sink0))"
stop_sink

# ---- report --------------------------------------------------------------------------------
# row NAME LABEL - one Markdown row from RESULT[NAME].
row() {
    read -r wall cpu sink got conns <<< "${RESULT[$1]}"
    awk -v label="$2" -v wall="$wall" -v cpu="$cpu" -v sink="$sink" -v got="$got" -v conns="$conns" -v n="$MESSAGES" 'BEGIN {
        printf "| %s | %.0f | %.2f | %.2f | %.1f | %.2f | %.0f%% | %s | %s |\n",
            label, n / wall, wall, cpu, cpu / n * 1e6, sink, sink / wall * 100, got, conns }'
}
rate() { read -r wall _ <<< "${RESULT[$1]}"; calc "$MESSAGES / $wall"; }
fill_row() {   # fill_row NAME LABEL CPU - an enqueue-only row: wall from NAME.time
    awk -v label="$2" -v n="$MESSAGES" -v cpu="$3" '{ printf "| %s | %.0f | %.2f | %.2f | %.1f | - | - | - | - |\n",
        label, n / $1, $1, cpu, cpu / n * 1e6 }' "$WORK/$1.time"
}

echo
echo "$MESSAGES messages x $SIZE octets to 100 domains, one recipient each; receiver: smtp-sink;"
echo "concurrency $CONCURRENCY; $(nproc) cores; logs $([ "$NO_LOG" = 1 ] && echo off || echo on)."
echo
echo "| run | messages/s | wall s | MTA CPU s | MTA CPU µs/message | sink CPU s | sink CPU % of wall | sink got | peak connections |"
echo "|---|---|---|---|---|---|---|---|---|"
row a-postfix "(a) Postfix: deliver a full queue (release -> queue empty)"
row a-carrier "(a) Carrier: serve --drain over a full spool"
row b-postfix "(b) Postfix: smtp-source -> smtpd -> queue -> smtp-sink (end to end)"
row b-carrier "(b) Carrier: smtp-source -> listener -> spool -> smtp-sink (end to end)"
fill_row fill-postfix "fill for (a): smtp-source -> held Postfix, $SESSIONS sessions (smtp-source: $(job_cpu fill-postfix) s CPU)" "$FILL_POSTFIX_CPU"
fill_row fill-carrier "fill for (a): carrier campaign, fsync (one message + $MESSAGES recipient records)" "$(job_cpu fill-carrier)"
echo
echo "Carrier / Postfix, messages/s: (a) delivery $(calc "$(rate a-carrier) / $(rate a-postfix)" | sed 's/\(\.[0-9][0-9]\).*/\1/')x," \
     "(b) end to end $(calc "$(rate b-carrier) / $(rate b-postfix)" | sed 's/\(\.[0-9][0-9]\).*/\1/')x."
echo "(b) smtp-source itself used $(job_cpu inject-b) s CPU (Postfix) and $(job_cpu inject-b-carrier) s (Carrier) on the same cores."
echo "carrier serve summaries: (a) $(head -1 "$WORK/serve-a.out")"
echo "                         (b) $(head -1 "$WORK/serve-b.out")"
if [ "$NO_LOG" != 1 ]; then
    for run in a b; do
        sent=$(grep -c 'status=sent' "$WORK/maillog-$run" 2>/dev/null || true)
        other=$(grep -E -c 'status=(deferred|bounced)' "$WORK/maillog-$run" 2>/dev/null || true)
        echo "Postfix ($run) maillog: ${sent:-0} status=sent, ${other:-0} deferred/bounced."
    done
fi
for run in a-postfix a-carrier b-postfix b-carrier; do
    read -r _ _ _ got _ <<< "${RESULT[$run]}"
    [ "${got:-0}" = "$MESSAGES" ] || echo "WARNING: the sink of $run received ${got:-0} of $MESSAGES messages"
done
