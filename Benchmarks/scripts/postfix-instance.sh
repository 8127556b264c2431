#!/bin/bash
# postfix-instance.sh - a private, loopback-only Postfix instance for benchmarks and tests.
#
# Usage:
#   postfix-instance.sh start DIR PORT [relay HOST:PORT | maildir]   (default: maildir)
#   postfix-instance.sh stop DIR
#   postfix-instance.sh hold DIR          pause outbound delivery (mail stays queued)
#   postfix-instance.sh release DIR       resume it: the queue manager restarts and delivers
#   postfix-instance.sh queue-count DIR   messages in the queue (prints a number)
#   postfix-instance.sh queue-empty DIR   exit 0 when the queue is empty, 1 otherwise
#   postfix-instance.sh wait-empty DIR [SECONDS]   poll every 100 ms until the queue is
#                                                  empty (default at most 600 s; exit 1 then)
#
# start creates DIR/etc (main.cf, master.cf), DIR/queue, DIR/data and DIR/log (maillog),
# and runs the instance: its smtpd listens on 127.0.0.1:PORT only (nothing on port 25),
# mail from 127.0.0.0/8 is accepted for any domain, nothing is delivered locally and no
# DNS is used. Then, per mode:
#   relay HOST:PORT  everything goes to [HOST]:PORT over plain SMTP (HOST must be 127.x);
#   maildir          recipients at peer.test are delivered by virtual(8) as a Maildir into
#                    DIR/mail/inbox/ (owned by nobody); any other domain bounces.
# Environment: CONCURRENCY (default 50) is the smtp client's per-destination limit (a
# relayhost is one destination, so it is the number of parallel connections to HOST:PORT);
# HOLD=1 with start starts the instance already held; NO_LOG=1 drops Postfix's log.
# Must run as root (Postfix's master does). The instance is independent of the system's
# own Postfix (which may stay unconfigured and stopped); stop it before removing DIR.
set -euo pipefail

die() { echo "postfix-instance.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"
for tool in postfix postconf postsuper; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || die "no $tool: apt-get install postfix"
done
export PATH="$PATH:/usr/sbin"

# ensure_default_main_cf - Postfix's commands read the default /etc/postfix/main.cf even
# with -c (for alternate_config_directories and friends); an apt install with "No
# configuration" leaves none, and every command then fails. A minimal one is enough; the
# system's default instance is not started by this.
#
# alternate_config_directories: Postfix only insists that a non-default config directory
# be listed there (or in multi_instance_directories) for unprivileged users of its
# set-gid programs (postdrop, postqueue). As root, `postfix -c`, `postsuper -c`,
# `postqueue -c` and `sendmail -C` accept any directory (checked on Postfix 3.7), so this
# script leaves the default main.cf alone apart from creating it.
ensure_default_main_cf() {
    if ! [ -e /etc/postfix/main.cf ]; then
        mkdir -p /etc/postfix
        printf '%s\n' "# Minimal main.cf written by Benchmarks/scripts/postfix-instance.sh so that" \
            "# Postfix's commands work; the default instance is not configured or started." \
            "compatibility_level = 3.7" > /etc/postfix/main.cf
    fi
}

# pf DIR ARGS... - postconf on DIR's instance.
pf() { local dir=$1; shift; postconf -c "$dir/etc" "$@"; }

# master_pid DIR - the instance's master process id, or nothing when it is not running.
master_pid() {
    local file="$1/queue/pid/master.pid" pid
    [ -r "$file" ] || return 0
    pid=$(tr -d ' \n' < "$file")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = master ]; then
        echo "$pid"
    fi
}

# port_open PORT - something accepts on 127.0.0.1:PORT.
port_open() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# wait_qmgr DIR WANT - until the instance has (WANT=1) or has not (WANT=0) a qmgr process,
# at most 10 s.
wait_qmgr() {
    local pid have
    for _ in $(seq 1 100); do
        pid=$(master_pid "$1")
        [ -n "$pid" ] || return 0
        have=0
        pgrep -P "$pid" -x qmgr >/dev/null && have=1
        [ "$have" = "$2" ] && return 0
        sleep 0.1
    done
    die "qmgr of $1 did not $([ "$2" = 1 ] && echo start || echo stop) within 10 s"
}

cmd_start() {
    local dir=$1 port=$2 mode=${3:-maildir} target=${4:-}
    [[ "$port" =~ ^[0-9]+$ ]] || die "bad PORT: $port"
    case "$mode" in
        relay) [[ "$target" =~ ^127\.[0-9.]+:[0-9]+$ ]] || die "relay needs HOST:PORT on 127.0.0.0/8, got '$target'" ;;
        maildir) ;;
        *) die "mode must be 'relay HOST:PORT' or 'maildir'" ;;
    esac
    ensure_default_main_cf
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)        # Postfix wants absolute paths
    [ -z "$(master_pid "$dir")" ] || die "an instance already runs in $dir"
    port_open "$port" && die "127.0.0.1:$port is already in use"
    # The daemons drop to the postfix user (and virtual(8) to nobody) and reach DIR by its
    # absolute path: DIR must be searchable (mktemp -d makes 0700 directories).
    chmod 755 "$dir"
    mkdir -p "$dir/etc" "$dir/queue" "$dir/data" "$dir/log"
    # queue_directory is root-owned (postfix-script creates its subdirectories owned by
    # postfix at start, like `postfix set-permissions`); data_directory belongs to postfix.
    chown root:root "$dir/queue"
    chown postfix: "$dir/data"

    # master.cf: Debian's, with the port-25 smtpd replaced by one on 127.0.0.1:PORT and
    # chroot off everywhere (a chroot would need copies of /etc files inside DIR/queue).
    cp /etc/postfix/master.cf "$dir/etc/master.cf"
    : > "$dir/etc/main.cf"
    pf "$dir" -MX smtp/inet
    pf "$dir" -M "127.0.0.1:$port/inet=127.0.0.1:$port inet n - n - - smtpd"
    pf "$dir" -F '*/*/chroot=n'

    # main.cf, common to both modes.
    local log_settings=()
    if [ "${NO_LOG:-0}" = 1 ]; then
        # No maillog_file: Postfix logs to syslog, which silently drops it without /dev/log.
        log_settings=("maillog_file =")
    else
        log_settings=("maillog_file = $dir/log/maillog" "maillog_file_prefixes = $dir/log")
    fi
    pf "$dir" -e \
        "compatibility_level = 3.7" \
        "queue_directory = $dir/queue" \
        "data_directory = $dir/data" \
        "myhostname = postfix-instance.test" \
        "mydomain = postfix-instance.test" \
        "myorigin = \$myhostname" \
        "inet_interfaces = 127.0.0.1" \
        "inet_protocols = ipv4" \
        "mynetworks = 127.0.0.0/8" \
        "mydestination =" \
        "local_transport = error:local delivery is disabled" \
        "local_recipient_maps =" \
        "alias_maps =" \
        "alias_database =" \
        "biff = no" \
        "append_dot_mydomain = no" \
        "smtpd_relay_restrictions = permit_mynetworks, reject" \
        "smtpd_recipient_restrictions = permit_mynetworks, reject" \
        "smtp_tls_security_level = none" \
        "smtpd_tls_security_level = none" \
        "smtp_dns_support_level = disabled" \
        "smtp_host_lookup = native" \
        "lmtp_host_lookup = native" \
        "default_destination_concurrency_limit = ${CONCURRENCY:-50}" \
        "${log_settings[@]}"
    if [ "${HOLD:-0}" = 1 ]; then        # see cmd_hold
        pf "$dir" -e "master_service_disable = qmgr.unix" "in_flow_delay = 0"
    fi
    # smtp_dns_support_level = disabled is the current spelling of disable_dns_lookups
    # (deprecated since 2.11): the smtp client resolves hosts with getaddrinfo
    # (smtp_host_lookup = native) and never looks up MX records. Everything else keeps
    # Postfix's defaults: initial_destination_concurrency 5 with slow start (as Carrier),
    # default_process_limit 100 (bounds the smtp processes), qmgr_message_active_limit
    # 20000 (the active queue), in_flow_delay 1s (smtpd slows senders while the queue
    # manager lags), connection caching on demand.

    if [ "$mode" = relay ]; then
        pf "$dir" -e "relayhost = [${target%:*}]:${target##*:}" "default_transport = smtp"
    else
        local uid gid
        uid=$(id -u nobody); gid=$(id -g nobody)
        mkdir -p "$dir/mail"
        chown "$uid:$gid" "$dir/mail"
        runuser -u nobody -- test -w "$dir/mail" || die "nobody cannot write $dir/mail (is a parent of $dir 0700?)"
        pf "$dir" -e \
            "relayhost =" \
            "default_transport = error:this instance only delivers to peer.test" \
            "virtual_transport = virtual" \
            "virtual_mailbox_domains = peer.test" \
            "virtual_mailbox_base = $dir/mail" \
            "virtual_mailbox_maps = static:inbox/" \
            "virtual_uid_maps = static:$uid" \
            "virtual_gid_maps = static:$gid"
        # static:inbox/ - every recipient shares one Maildir (the trailing slash makes it
        # a Maildir rather than an mbox file), DIR/mail/inbox/{new,cur,tmp}.
    fi

    # `postfix check` creates missing queue subdirectories with the right owners and
    # modes, and warns about wrong ones; then start and wait for the listener.
    postfix -c "$dir/etc" check
    postfix -c "$dir/etc" start >/dev/null 2>&1 || { tail -5 "$dir/log/maillog" >&2 2>/dev/null || true; die "postfix start failed for $dir"; }
    for _ in $(seq 1 100); do
        if port_open "$port"; then
            if [ "${HOLD:-0}" = 1 ]; then wait_qmgr "$dir" 0; fi
            return 0
        fi
        sleep 0.1
    done
    die "smtpd of $dir does not listen on 127.0.0.1:$port after 10 s"
}

cmd_stop() {
    local dir=$1 pid
    pid=$(master_pid "$dir")
    [ -n "$pid" ] || return 0
    postfix -c "$dir/etc" stop >/dev/null 2>&1 || true
    # `postfix stop` signals the master; wait (at most 10 s) for it and its children to
    # go, then kill what is left of this instance by process id.
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    pkill -KILL -P "$pid" 2>/dev/null || true
    kill -KILL "$pid" 2>/dev/null || true
}

# hold: the queue manager is the only process that moves mail from the incoming queue to
# delivery agents, so disabling its master.cf entry (master_service_disable = qmgr.unix,
# Postfix >= 2.11) pauses all outbound delivery while smtpd and cleanup keep accepting
# and queueing mail in DIR/queue/incoming, exactly as received. release re-enables it;
# the new qmgr scans the incoming (and deferred) queue at once at start. Alternatives
# considered: defer_transports = smtp moves every message to the deferred queue and
# writes a defer log per message (work on both sides of the release), and HOLD +
# `postsuper -H ALL` renames every queue file into the deferred queue at release time;
# both add per-message work that a "deliver from a full queue" timing should not count.
# While held, cleanup logs "warning: unable to look up public/qmgr" once per message (the
# queue manager's wake-up FIFO is gone with the service); the mail is queued all the same.
# in_flow_delay = 0 while held: cleanup otherwise waits up to in_flow_delay (1 s) for a
# flow-control token that only a running qmgr hands out, i.e. ~1 message/s per SMTP
# session (measured: 300 messages over 10 sessions took 30 s held, 1.2 s with 0).
cmd_hold() {
    local dir=$1
    pf "$dir" -e "master_service_disable = qmgr.unix" "in_flow_delay = 0"
    if [ -n "$(master_pid "$dir")" ]; then
        postfix -c "$dir/etc" reload >/dev/null 2>&1
        wait_qmgr "$dir" 0
    fi
}

cmd_release() {
    local dir=$1
    pf "$dir" -e "master_service_disable ="
    pf "$dir" -X in_flow_delay      # back to Postfix's default (1 s)
    if [ -n "$(master_pid "$dir")" ]; then
        postfix -c "$dir/etc" reload >/dev/null 2>&1
    fi
}

# Queue files live in these queues (defer/, bounce/ and trace/ hold per-message logs,
# not messages). The directories are postfix-only (0700): this needs root.
QUEUES=(incoming active deferred hold maildrop)

cmd_queue_count() {
    local q=$1/queue
    find "${QUEUES[@]/#/$q/}" -type f 2>/dev/null | wc -l
}

# queue_empty stops at the first file found, so it is cheap even on a full queue.
cmd_queue_empty() {
    local q=$1/queue
    [ -z "$(find "${QUEUES[@]/#/$q/}" -type f -print -quit 2>/dev/null)" ]
}

cmd_wait_empty() {
    local dir=$1 seconds=${2:-600} i
    for ((i = 0; i < seconds * 10; i++)); do
        cmd_queue_empty "$dir" && return 0
        sleep 0.1
    done
    echo "postfix-instance.sh: queue of $dir not empty after $seconds s ($(cmd_queue_count "$dir") left)" >&2
    return 1
}

[ $# -ge 2 ] || { sed -n '3,12p' "$0" >&2; exit 2; }
sub=$1; shift
case "$sub" in
    start)
        [ $# -ge 2 ] || die "start DIR PORT [relay HOST:PORT | maildir]"
        cmd_start "$@" ;;
    stop) cmd_stop "$1" ;;
    hold) cmd_hold "$1" ;;
    release) cmd_release "$1" ;;
    queue-count) cmd_queue_count "$1" ;;
    queue-empty) cmd_queue_empty "$1" ;;
    wait-empty) cmd_wait_empty "$@" ;;
    *) die "unknown subcommand $sub" ;;
esac
