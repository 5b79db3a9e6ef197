#!/usr/bin/env bash
# Runs one city's highly available database on this machine, over loopback: one etcd member and
# a Patroni cluster of three PostgreSQL 15 nodes (pg1 pg2 pg3) with strict synchronous
# replication. Everything lives under DIR; nothing outside it is written.
#
#   scripts/city-cluster.sh start DIR [--fast] [--netns]  etcd + 3 nodes, waits until healthy,
#                                                 creates database citypay, writes
#                                                 DIR/cluster.env; on a stopped DIR it restarts
#                                                 that cluster
#   scripts/city-cluster.sh stop DIR [--remove]   stops everything; keeps DIR unless --remove
#   scripts/city-cluster.sh status DIR            patronictl list and show-config, etcd health
#   scripts/city-cluster.sh leader DIR            prints "NAME PGPORT" of the leader
#   scripts/city-cluster.sh kill-primary DIR      SIGKILLs the leader's agent and postmaster
#                                                 (machine loss); prints the node's name
#   scripts/city-cluster.sh kill-patroni DIR NAME SIGKILLs the agent only (postgres stays)
#   scripts/city-cluster.sh kill-postgres DIR NAME  SIGKILLs the node's postmaster only
#   scripts/city-cluster.sh rejoin DIR NAME [SECONDS]  kills what is left of NAME, starts its
#                                                 agent again, waits until the cluster is healthy
#   scripts/city-cluster.sh wait-healthy DIR [SECONDS]  leader + 2 streaming replicas, 1 sync
#   scripts/city-cluster.sh etcdctl DIR ARGS...   etcdctl (v3 API) on this cluster's etcd
#   scripts/city-cluster.sh partition DIR NAME    (--netns) cuts NAME off from etcd and the
#                                                 other nodes, not from clients (nftables)
#   scripts/city-cluster.sh heal DIR NAME         (--netns) undoes partition
#   scripts/city-cluster.sh serve DIR [N]         N (default 3) `citypay serve` of the city on
#                                                 this cluster, on 127.0.0.1:8081.. (the first
#                                                 run makes DIR/keys, Hangzhou and operator root)
#
# --netns (root): etcd and each node run in a network namespace of their own, on a bridge
# 10.213.N.0/24 (the first N free) whose .254 is this machine's side, so that a node can be cut
# off. The addresses are in cluster.env; stop deletes the namespaces and the bridge.
#
# DIR/cluster.env (mode 0600, shell `export` lines) gives clients:
#   CITYPAY_ETCD            http://127.0.0.1:PORT (10.213.N.1 with --netns)
#   CITYPAY_PATRONI         REST URLs of pg1,pg2,pg3 (GET /primary answers 200 on the leader)
#   CITYPAY_PATRONI_NAMES   pg1,pg2,pg3, in the same order
#   CITYPAY_PATRONI_AUTH    user:password for the REST API's unsafe calls (POST, PATCH...)
#   CITYPAY_PG_NODES        HOST:PORT of pg1,pg2,pg3, in the same order (`leader` prints
#                           the port only; the host is 127.0.0.1 unless --netns)
#   CITYPAY_PG_USER, CITYPAY_PG_PASSWORD  role `citypay`: owns database citypay, so it creates
#                           tables, and may pg_terminate_backend() its own sessions
#   CITYPAY_PG_SUPERUSER, CITYPAY_PG_SUPERUSER_PASSWORD  for tests that need more
#   CITYPAY_PG_DATABASE     citypay
#   CITYPAY_PG_URL_TEMPLATE postgres://citypay:PASSWORD@{node}/citypay, {node} = one of the nodes
#
# Files: DIR/pgN/patroni.yml and DIR/pgN/data (the agent's config and PGDATA), DIR/etcd,
# DIR/logs/{etcd.log,patroni-pgN.log,pgN/postgresql.log}, DIR/pids/*.pid. A test may record its
# own processes (a server under test) as DIR/pids/NAME.pid; stop ends those first.
#
# Ports: the first free block of 8 from $CITYPAY_CLUSTER_PORT_BASE (default 27000), in steps of
# 10: etcd client, etcd peer, REST pg1..pg3, PostgreSQL pg1..pg3. The default lies below the
# kernel's ephemeral ports: a client reconnecting to a killed node's port in that range can be
# given that very port as its own (a TCP self-connect) and hold it, and the node could not rejoin.
#
# Timing: ttl/loop_wait/retry_timeout default to 10/1/3 s ($CITYPAY_CLUSTER_TTL,
# $CITYPAY_CLUSTER_LOOP_WAIT, $CITYPAY_CLUSTER_RETRY_TIMEOUT). Patroni 3.0.2 checks only that they
# are integers; later releases raise ttl to at least 20, loop_wait to 1, retry_timeout to 3 and
# keep loop_wait + 2 * retry_timeout <= ttl, which the defaults satisfy except for the 20.
#
# --fast turns off fsync (tests SIGKILL processes; the machine does not lose power). Commits
# still wait for the synchronous standby. Production runs the watchdog in mode `required`; here it
# is `automatic`, since a test machine has no /dev/watchdog (and must not get softdog).
set -euo pipefail

die() { echo "city-cluster: $*" >&2; exit 1; }
say() { echo "city-cluster: $*" >&2; }

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

NODES=(pg1 pg2 pg3)
PGBIN=/usr/lib/postgresql/15/bin
PATRONI=/usr/bin/patroni
PATRONICTL=/usr/bin/patronictl
SCOPE=citypay
# Python of the system, which has the modules Patroni uses; pyenv's python3 may not.
PY=/usr/bin/python3

[ $# -ge 2 ] || usage
COMMAND=$1
DIR=$(realpath -m -- "$2")
shift 2
[ "$DIR" != / ] || die "DIR must not be /"
# Names of this DIR's network namespaces and links (with --netns); 15 characters at most.
NS_PREFIX=cc$(printf %s "$DIR" | sha1sum | cut -c1-6)
SUBNET=""

# Runs a command as the postgres user when we are root (the server refuses root).
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

random_secret() {
    od -An -tx1 -N16 /dev/urandom | tr -d ' \n'
}

# --- process helpers -----------------------------------------------------------------------------

# True when PID exists and is not a zombie.
alive() {
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

# Processes of this cluster found by their working directory: postgres backends, the
# postmaster, agents, etcd and the tools Patroni runs (pg_rewind, pg_basebackup) all keep a
# directory under DIR (or under DIR/SUBDIR) as their cwd. Only these program names are
# matched, so a shell that happens to sit in DIR is never touched.
procs_under() {
    local root=$1 proc pid cwd comm
    for proc in /proc/[0-9]*; do
        pid=${proc#/proc/}
        [ "$pid" -ne $$ ] || continue
        cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null) || continue
        case "$cwd" in "$root" | "$root"/*) ;; *) continue ;; esac
        comm=$(cat "/proc/$pid/comm" 2>/dev/null) || continue
        case "$comm" in
        postgres | postmaster | patroni | runuser | etcd | pg_*) ;;
        *) continue ;;
        esac
        alive "$pid" && echo "$pid"
    done
    return 0
}

read_pid() {
    local file=$1 pid
    [ -f "$file" ] || return 1
    pid=$(head -n1 "$file" 2>/dev/null | tr -dc 0-9)
    [ -n "$pid" ] || return 1
    echo "$pid"
}

# Waits until none of the given pids is alive, for at most $1 seconds.
wait_gone() {
    local seconds=$1 pid any i
    shift
    for ((i = 0; i < seconds * 10; i++)); do
        any=0
        for pid in "$@"; do alive "$pid" && any=1; done
        [ "$any" -eq 1 ] || return 0
        sleep 0.1
    done
    return 1
}

# Signals a recorded process and its process group (every process here starts with setsid, so
# its pid is its group's id).
signal_group() {
    local signal=$1 pid=$2
    kill "-$signal" -- "-$pid" 2>/dev/null || true
    kill "-$signal" "$pid" 2>/dev/null || true
}

postmaster_pid() {
    read_pid "$DIR/$1/data/postmaster.pid"
}

# --- layout and configuration --------------------------------------------------------------------

# Sets ETCD_PORT, ETCD_PEER_PORT, REST_PORTS[] and PG_PORTS[] from the block's first port.
set_ports() {
    local base=$1 i
    ETCD_PORT=$base
    ETCD_PEER_PORT=$((base + 1))
    REST_PORTS=() PG_PORTS=()
    for i in 0 1 2; do
        REST_PORTS+=($((base + 2 + i)))
        PG_PORTS+=($((base + 5 + i)))
    done
}

# Without --netns every node listens on 127.0.0.1. With it, etcd and each node get a network
# namespace of their own on a bridge 10.213.N.0/24 whose .254 is this side (the clients'), so
# that partition can cut a node off from its peers and etcd but not from the clients.
set_hosts() {
    local i
    NODE_HOSTS=()
    if [ -n "$SUBNET" ]; then
        ETCD_HOST=$SUBNET.1
        for i in 0 1 2; do NODE_HOSTS+=("$SUBNET.$((11 + i))"); done
        CLIENT_NET=$SUBNET.0/24
    else
        ETCD_HOST=127.0.0.1
        NODE_HOSTS=(127.0.0.1 127.0.0.1 127.0.0.1)
        CLIENT_NET=127.0.0.1/32
    fi
}

ns_of() { echo "$NS_PREFIX-$1"; }

choose_subnet() {
    local n
    for ((n = 1; n < 255; n++)); do
        if ! ip -o -4 addr show | grep -q " 10\.213\.$n\.254/"; then
            SUBNET=10.213.$n
            return 0
        fi
    done
    die "no free subnet 10.213.N.0/24 for --netns"
}

netns_up() {
    local bridge=${NS_PREFIX}br name ns addr link
    ip link add "$bridge" type bridge
    ip addr add "$SUBNET.254/24" dev "$bridge"
    ip link set "$bridge" up
    for name in etcd "${NODES[@]}"; do
        ns=$(ns_of "$name")
        link=$NS_PREFIX${name: -1}
        addr=$ETCD_HOST
        if [ "$name" != etcd ]; then addr=${NODE_HOSTS[$(node_index "$name")]}; fi
        ip netns add "$ns"
        ip link add "$link" type veth peer name eth0 netns "$ns"
        ip link set "$link" master "$bridge" up
        ip -n "$ns" addr add "$addr/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
    done
}

# Deleting a namespace deletes its end of the veth pair, and with it our end.
netns_down() {
    local name
    command -v ip >/dev/null || return 0
    for name in etcd "${NODES[@]}"; do
        if ip netns list | grep -q "^$(ns_of "$name")\b"; then ip netns del "$(ns_of "$name")"; fi
    done
    if ip link show "${NS_PREFIX}br" >/dev/null 2>&1; then ip link del "${NS_PREFIX}br"; fi
}

choose_ports() {
    local base=${CITYPAY_CLUSTER_PORT_BASE:-27000} tries offset busy
    for ((tries = 0; tries < 100; tries++, base += 10)); do
        busy=0
        for ((offset = 0; offset < 8; offset++)); do
            if port_in_use $((base + offset)); then busy=1; break; fi
        done
        if [ "$busy" -eq 0 ]; then set_ports "$base"; return 0; fi
    done
    die "no 8 free ports from ${CITYPAY_CLUSTER_PORT_BASE:-27000}; set CITYPAY_CLUSTER_PORT_BASE"
}

# Reads DIR/cluster.env into the variables the commands use.
load_env() {
    [ -f "$DIR/cluster.env" ] || die "$DIR/cluster.env is missing (run: $0 start $DIR)"
    # shellcheck disable=SC1091
    . "$DIR/cluster.env"
    set_ports "$CITYPAY_CLUSTER_PORT_BASE_USED"
    SUBNET=${CITYPAY_CLUSTER_SUBNET:-}
    set_hosts
    SUPER_PASSWORD=$CITYPAY_PG_SUPERUSER_PASSWORD
}

node_index() {
    local i
    for i in 0 1 2; do
        if [ "${NODES[$i]}" = "$1" ]; then echo "$i"; return 0; fi
    done
    die "unknown node '$1' (one of: ${NODES[*]})"
}

write_patroni_config() {
    local i=$1 name=${NODES[$1]} fast_params=""
    [ "$FAST" -eq 0 ] || fast_params="        fsync: 'off'"
    install -d -o postgres -g postgres -m 0700 "$DIR/$name" "$DIR/logs/$name"
    # The data directory is Patroni's to create; pgpass is rewritten by Patroni on each start.
    (umask 077 && cat >"$DIR/$name/patroni.yml") <<EOF
scope: $SCOPE
namespace: /service/
name: $name

restapi:
  listen: ${NODE_HOSTS[$i]}:${REST_PORTS[$i]}
  connect_address: ${NODE_HOSTS[$i]}:${REST_PORTS[$i]}
  # GET stays open (health checks); POST/PUT/PATCH/DELETE need these credentials.
  authentication:
    username: patroni
    password: $REST_PASSWORD

ctl:
  authentication:
    username: patroni
    password: $REST_PASSWORD

etcd3:
  hosts: $ETCD_HOST:$ETCD_PORT

bootstrap:
  dcs:
    ttl: $TTL
    loop_wait: $LOOP_WAIT
    retry_timeout: $RETRY_TIMEOUT
    maximum_lag_on_failover: 1048576
    # A commit is acknowledged only once a standby has it, and Patroni never turns that off,
    # even with no standby left (writes then block: the fence of a deposed primary).
    synchronous_mode: true
    synchronous_mode_strict: true
    synchronous_node_count: 1
    postgresql:
      use_pg_rewind: true
      use_slots: true
      # A killed primary that cannot be rewound is copied again rather than left out.
      remove_data_directory_on_rewind_failure: true
      remove_data_directory_on_diverged_timelines: true
      parameters:
        wal_level: replica
        hot_standby: 'on'
        max_connections: 200
        max_wal_senders: 10
        max_replication_slots: 10
        wal_keep_size: 128MB
        synchronous_commit: 'on'
        # A standby behind a dead or cut-off link is dropped within seconds, not after 60 s.
        wal_sender_timeout: 5s
        wal_receiver_timeout: 5s
        # pg_rewind needs full page writes (and hint bits logged or checksums; we have both).
        full_page_writes: 'on'
        password_encryption: scram-sha-256
$fast_params
  initdb:
    - encoding: UTF8
    - data-checksums
    - auth-local: peer
    - auth-host: scram-sha-256

postgresql:
  listen: ${NODE_HOSTS[$i]}:${PG_PORTS[$i]}
  connect_address: ${NODE_HOSTS[$i]}:${PG_PORTS[$i]}
  data_dir: $DIR/$name/data
  bin_dir: $PGBIN
  pgpass: $DIR/$name/pgpass
  authentication:
    superuser:
      username: postgres
      password: $SUPER_PASSWORD
    replication:
      username: replicator
      password: $REPL_PASSWORD
  parameters:
    unix_socket_directories: '$DIR/$name'
    logging_collector: 'on'
    log_directory: '$DIR/logs/$name'
    log_filename: postgresql.log
    log_line_prefix: '%m [%p] %q%u@%d '
  # Passwords everywhere; only the postgres OS user may use the socket, as itself.
  pg_hba:
    - local all postgres peer
    - host replication replicator $CLIENT_NET scram-sha-256
    - host all all $CLIENT_NET scram-sha-256

watchdog:
  mode: automatic
  device: /dev/watchdog
  safety_margin: 5
EOF
    chown postgres:postgres "$DIR/$name/patroni.yml"
}

write_env() {
    local rest="" nodes="" i
    for i in 0 1 2; do
        rest="$rest${rest:+,}http://${NODE_HOSTS[$i]}:${REST_PORTS[$i]}"
        nodes="$nodes${nodes:+,}${NODE_HOSTS[$i]}:${PG_PORTS[$i]}"
    done
    (umask 077 && cat >"$DIR/cluster.env.tmp") <<EOF
export CITYPAY_CLUSTER_DIR=$DIR
export CITYPAY_CLUSTER_PORT_BASE_USED=$ETCD_PORT
export CITYPAY_ETCD=http://$ETCD_HOST:$ETCD_PORT
export CITYPAY_CLUSTER_SUBNET=$SUBNET
export CITYPAY_PATRONI=$rest
export CITYPAY_PATRONI_NAMES=$(IFS=,; echo "${NODES[*]}")
export CITYPAY_PATRONI_AUTH=patroni:$REST_PASSWORD
export CITYPAY_PG_NODES=$nodes
export CITYPAY_PG_USER=citypay
export CITYPAY_PG_PASSWORD=$APP_PASSWORD
export CITYPAY_PG_SUPERUSER=postgres
export CITYPAY_PG_SUPERUSER_PASSWORD=$SUPER_PASSWORD
export CITYPAY_PG_DATABASE=citypay
export CITYPAY_PG_URL_TEMPLATE='postgres://citypay:$APP_PASSWORD@{node}/citypay'
EOF
    mv "$DIR/cluster.env.tmp" "$DIR/cluster.env"
}

# --- launching -----------------------------------------------------------------------------------

# Starts a program in its own session with DIR/SUBDIR as cwd (so stop finds what it leaves
# behind) and records its pid, which is also its process group's id.
launch() {
    local pidname=$1 subdir=$2 log=$3 ns=$4
    shift 4
    # ip netns exec execs the command (no fork), so the recorded pid stays the program's.
    if [ -n "$ns" ]; then set -- ip netns exec "$ns" "$@"; fi
    (cd "$DIR/$subdir" && exec setsid "$@" >>"$DIR/logs/$log" 2>&1 </dev/null) &
    echo "$!" >"$DIR/pids/$pidname.pid"
}

# The namespace a program runs in, or nothing without --netns.
netns_name() {
    if [ -n "$SUBNET" ]; then ns_of "$1"; fi
}

launch_etcd() {
    launch etcd etcd etcd.log "$(netns_name etcd)" \
        /usr/bin/etcd --name "$SCOPE" --data-dir "$DIR/etcd/data" \
        --listen-client-urls "http://$ETCD_HOST:$ETCD_PORT" \
        --advertise-client-urls "http://$ETCD_HOST:$ETCD_PORT" \
        --listen-peer-urls "http://$ETCD_HOST:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls "http://$ETCD_HOST:$ETCD_PEER_PORT" \
        --initial-cluster "$SCOPE=http://$ETCD_HOST:$ETCD_PEER_PORT" \
        --initial-cluster-state new --enable-v2=false --logger zap
}

launch_patroni() {
    local name=$1
    if [ "$(id -u)" -eq 0 ]; then
        launch "patroni-$name" "$name" "patroni-$name.log" "$(netns_name "$name")" \
            runuser -u postgres -- "$PATRONI" "$DIR/$name/patroni.yml"
    else
        launch "patroni-$name" "$name" "patroni-$name.log" "$(netns_name "$name")" \
            "$PATRONI" "$DIR/$name/patroni.yml"
    fi
}

wait_etcd() {
    local i
    for ((i = 0; i < 150; i++)); do
        if etcdctl_here endpoint health >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    tail -n 20 "$DIR/logs/etcd.log" >&2 || true
    die "etcd did not become healthy on port $ETCD_PORT"
}

etcdctl_here() {
    ETCDCTL_API=3 etcdctl --endpoints="http://$ETCD_HOST:$ETCD_PORT" --command-timeout=3s "$@"
}

# --- health --------------------------------------------------------------------------------------

# Answers the HTTP status of GET PATH on node number $1's REST API.
rest_code() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
        "http://${NODE_HOSTS[$1]}:${REST_PORTS[$1]}$2" || true
}

# Prints the index of the node whose agent holds the leader key and runs a primary.
leader_index() {
    local i
    for i in 0 1 2; do
        if [ "$(rest_code "$i" /primary)" = 200 ]; then echo "$i"; return 0; fi
    done
    return 1
}

# Runs psql as the superuser on node number $1.
psql_super() {
    local i=$1
    shift
    PGPASSWORD=$SUPER_PASSWORD PGCONNECT_TIMEOUT=3 "$PGBIN/psql" \
        -h "${NODE_HOSTS[$i]}" -p "${PG_PORTS[$i]}" \
        -U postgres -d postgres -XAtq -v ON_ERROR_STOP=1 "$@"
}

# Prints one line describing the cluster; succeeds when it is healthy: one leader, the two
# others streaming to it, one of them the synchronous standby in PostgreSQL and in Patroni.
health() {
    local li members repl expected i url
    li=$(leader_index) || { echo "no leader"; return 1; }
    url=http://${NODE_HOSTS[$li]}:${REST_PORTS[$li]}/cluster
    members=$(curl -s --max-time 2 "$url" | "$PY" -c '
import json, sys
c = json.load(sys.stdin)
print(" ".join(sorted("%s:%s:%s" % (m["name"], m.get("role"), m.get("state"))
               for m in c.get("members", []))))' 2>/dev/null) || members="?"
    repl=$(psql_super "$li" -F: -c \
        "select application_name, state, sync_state from pg_stat_replication
         order by application_name" 2>/dev/null | tr '\n' ' ') || repl="?"
    echo "leader ${NODES[$li]}; patroni: $members; replication: $repl"
    expected=$(for i in 0 1 2; do [ "$i" = "$li" ] || echo "${NODES[$i]}"; done | tr '\n' ' ')
    # Both other nodes stream, and exactly one is sync.
    local n streaming=0 sync=0
    for n in $expected; do
        case " $repl " in *" $n:streaming:"*) streaming=$((streaming + 1)) ;; esac
    done
    sync=$(grep -o ':streaming:sync' <<<"$repl" | wc -l)
    if [ "$streaming" -ne 2 ] || [ "$sync" -ne 1 ]; then return 1; fi
    case "$members" in *":sync_standby:running"*) ;; *) return 1 ;; esac
    [ "$(grep -o ':running' <<<"$members" | wc -l)" -eq 3 ]
}

wait_healthy() {
    local seconds=$1 started=$SECONDS line=""
    while [ $((SECONDS - started)) -lt "$seconds" ]; do
        if line=$(health); then
            say "healthy after $((SECONDS - started)) s: $line"
            return 0
        fi
        sleep 0.5
    done
    say "not healthy after $seconds s: $line"
    return 1
}

# --- commands ------------------------------------------------------------------------------------

check_dir_for_postgres() {
    [ "$(id -u)" -eq 0 ] || return 0
    runuser -u postgres -- test -x "$DIR" \
        || die "user postgres cannot reach $DIR; use a directory under a world-searchable parent"
}

cmd_start() {
    FAST=0
    local netns=0
    while [ $# -gt 0 ]; do
        case "$1" in
        --fast) FAST=1 ;;
        --netns) netns=1 ;;
        *) die "start: unknown option $1" ;;
        esac
        shift
    done
    if ! command -v etcd >/dev/null || [ ! -x "$PATRONI" ] || [ ! -x "$PGBIN/postgres" ]; then
        die "needs etcd, patroni and PostgreSQL 15 (apt-get install etcd-server etcd-client" \
            "patroni postgresql-15)"
    fi
    id postgres >/dev/null 2>&1 || [ "$(id -u)" -ne 0 ] || die "user postgres does not exist"

    local t0=$SECONDS restart=0 name i
    if [ -f "$DIR/cluster.env" ]; then
        [ -z "$(running_pids)" ] || die "$DIR is running; stop it first"
        restart=1
        load_env
        for ((i = 0; i < 8; i++)); do
            ! port_in_use $((ETCD_PORT + i)) || die "port $((ETCD_PORT + i)) of $DIR is taken"
        done
        say "restarting the stopped cluster in $DIR"
    else
        [ ! -e "$DIR" ] || [ -z "$(ls -A "$DIR")" ] || die "$DIR exists and holds no cluster"
        choose_ports
        if [ "$netns" -eq 1 ]; then
            [ "$(id -u)" -eq 0 ] || die "--netns needs root"
            choose_subnet
        fi
        set_hosts
        TTL=${CITYPAY_CLUSTER_TTL:-10}
        LOOP_WAIT=${CITYPAY_CLUSTER_LOOP_WAIT:-1}
        RETRY_TIMEOUT=${CITYPAY_CLUSTER_RETRY_TIMEOUT:-3}
        SUPER_PASSWORD=$(random_secret) REPL_PASSWORD=$(random_secret)
        REST_PASSWORD=$(random_secret) APP_PASSWORD=$(random_secret)
        install -d -m 0755 "$DIR"
    fi
    install -d -m 0755 "$DIR/logs" "$DIR/pids"
    install -d -m 0700 "$DIR/etcd"
    check_dir_for_postgres

    # A failed start leaves no process behind (the files stay, for the logs).
    trap 'say "start failed; stopping what was started (logs in $DIR/logs)"; cmd_stop' EXIT
    if [ -n "$SUBNET" ]; then netns_up; fi
    launch_etcd
    wait_etcd
    say "etcd on $ETCD_PORT after $((SECONDS - t0)) s"
    for name in "${NODES[@]}"; do
        [ "$restart" -eq 1 ] || write_patroni_config "$(node_index "$name")"
        launch_patroni "$name"
    done
    if ! wait_healthy 120; then
        for name in "${NODES[@]}"; do
            echo "--- $name" >&2
            tail -n 15 "$DIR/logs/patroni-$name.log" >&2 || true
        done
        die "the cluster did not become healthy"
    fi
    if [ "$restart" -eq 0 ]; then
        create_database
        write_env
    fi
    trap - EXIT
    if [ "$restart" -eq 1 ]; then
        say "ready after $((SECONDS - t0)) s (settings as first started); env in $DIR/cluster.env"
    else
        local mode=durable
        if [ "$FAST" -eq 1 ]; then mode="fsync off"; fi
        say "ready after $((SECONDS - t0)) s ($mode);" \
            "env in $DIR/cluster.env"
    fi
}

create_database() {
    local li
    li=$(leader_index) || die "the leader went away before database citypay was created"
    psql_super "$li" -c "create role citypay login password '$APP_PASSWORD'" \
        -c "create database citypay owner citypay" >/dev/null
}

# Pids of recorded processes that are still alive.
running_pids() {
    local file pid
    for file in "$DIR"/pids/*.pid; do
        [ -e "$file" ] || continue
        pid=$(read_pid "$file") || continue
        if alive "$pid"; then echo "$pid"; fi
    done
    return 0
}

# Ends the processes recorded in the given pid files: TERM to their groups, KILL after $1 s.
stop_recorded() {
    local seconds=$1 file pid pids=()
    shift
    for file in "$@"; do
        [ -e "$file" ] || continue
        pid=$(read_pid "$file") || continue
        alive "$pid" || continue
        pids+=("$pid")
        signal_group TERM "$pid"
    done
    [ "${#pids[@]}" -gt 0 ] || return 0
    if ! wait_gone "$seconds" "${pids[@]}"; then
        for pid in "${pids[@]}"; do signal_group KILL "$pid"; done
        wait_gone 5 "${pids[@]}" || true
    fi
}

# A stopping agent shuts its postgres down cleanly (fast mode). The TERM goes to the agent
# itself: runuser, its parent, would SIGKILL it 2 s after being signalled itself.
stop_agents() {
    local file pid pids=()
    for file in "$DIR"/pids/patroni-*.pid; do
        pid=$(read_pid "$file") || continue
        alive "$pid" || continue
        pids+=("$pid")
        if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = runuser ]; then
            # shellcheck disable=SC2046
            kill -TERM $(pgrep -P "$pid") 2>/dev/null || true
        else
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    [ "${#pids[@]}" -gt 0 ] || return 0
    if ! wait_gone 30 "${pids[@]}"; then
        for pid in "${pids[@]}"; do signal_group KILL "$pid"; done
        wait_gone 5 "${pids[@]}" || true
    fi
}

cmd_stop() {
    local remove=0 file pids others=()
    while [ $# -gt 0 ]; do
        case "$1" in
        --remove) remove=1 ;;
        *) die "stop: unknown option $1" ;;
        esac
        shift
    done
    if [ -d "$DIR" ]; then
        # Servers under test first, so they do not see the database go away under them.
        for file in "$DIR"/pids/*.pid; do
            case "$(basename "$file")" in etcd.pid | patroni-*.pid) ;; *) others+=("$file") ;; esac
        done
        [ "${#others[@]}" -eq 0 ] || stop_recorded 10 "${others[@]}"
        stop_agents
        # Orphans: postgres started by an agent lives in its own session, out of reach of the
        # agent's group (and backends call setsid too). SIGINT is a fast shutdown.
        pids=$(procs_under "$DIR" | grep -vx "$(read_pid "$DIR/pids/etcd.pid" || echo 0)" || true)
        if [ -n "$pids" ]; then
            say "ending orphans: $(echo "$pids" | tr '\n' ' ')"
            # shellcheck disable=SC2086
            kill -INT $pids 2>/dev/null || true
            # shellcheck disable=SC2086
            wait_gone 15 $pids || { kill -KILL $pids 2>/dev/null || true; }
        fi
        stop_recorded 10 "$DIR/pids/etcd.pid"
        # Whatever is still there (a process that ignored all of the above).
        pids=$(procs_under "$DIR")
        if [ -n "$pids" ]; then
            # shellcheck disable=SC2086
            kill -KILL $pids 2>/dev/null || true
            # shellcheck disable=SC2086
            wait_gone 5 $pids || die "could not end: $(echo "$pids" | tr '\n' ' ')"
        fi
        rm -f "$DIR"/pids/*.pid
    fi
    netns_down
    if [ "$remove" -eq 1 ]; then rm -rf -- "$DIR"; fi
}

cmd_status() {
    load_env
    "$PATRONICTL" -c "$DIR/pg1/patroni.yml" list || true
    "$PATRONICTL" -c "$DIR/pg1/patroni.yml" show-config || true
    etcdctl_here endpoint health || true
    health || true
}

cmd_leader() {
    load_env
    local li
    li=$(leader_index) || die "no leader"
    echo "${NODES[$li]} ${PG_PORTS[$li]}"
}

# SIGKILLs a node's postmaster and the postgres processes it started (each backend is in its
# own session, so there is no group to signal).
kill_postgres_of() {
    local name=$1 pm
    pm=$(postmaster_pid "$name") || return 0
    alive "$pm" || return 0
    # shellcheck disable=SC2046
    kill -KILL "$pm" $(pgrep -P "$pm") 2>/dev/null || true
}

kill_patroni_of() {
    local pid
    pid=$(read_pid "$DIR/pids/patroni-$1.pid") || return 0
    alive "$pid" || return 0
    signal_group KILL "$pid"
    wait_gone 5 "$pid" || true
}

cmd_kill_primary() {
    load_env
    local li name pid pm
    li=$(leader_index) || die "no leader to kill"
    name=${NODES[$li]}
    pid=$(read_pid "$DIR/pids/patroni-$name.pid") || die "no pid recorded for $name's agent"
    pm=$(postmaster_pid "$name") || die "no postmaster.pid for $name"
    # One kill for agent and postmaster: no moment where one runs without the other.
    # shellcheck disable=SC2046
    kill -KILL -- "-$pid" "$pid" "$pm" $(pgrep -P "$pm") 2>/dev/null || true
    echo "$name"
}

cmd_kill_patroni() {
    [ $# -eq 1 ] || usage
    load_env
    node_index "$1" >/dev/null
    kill_patroni_of "$1"
}

cmd_kill_postgres() {
    [ $# -eq 1 ] || usage
    load_env
    node_index "$1" >/dev/null
    local pm
    pm=$(postmaster_pid "$1") || die "no postmaster.pid for $1"
    alive "$pm" || die "$1's postmaster ($pm) is not running"
    kill -KILL "$pm"
}

cmd_rejoin() {
    [ $# -ge 1 ] || usage
    load_env
    local name=$1 seconds=${2:-120} t0=$SECONDS pids
    node_index "$name" >/dev/null
    kill_patroni_of "$name"
    kill_postgres_of "$name"
    pids=$(procs_under "$DIR/$name")
    if [ -n "$pids" ]; then
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
        # shellcheck disable=SC2086
        wait_gone 5 $pids || die "could not end what is left of $name: $pids"
    fi
    launch_patroni "$name"
    wait_healthy "$seconds" || die "$name did not rejoin within $seconds s"
    say "$name rejoined after $((SECONDS - t0)) s"
}

# Cuts node NAME off from etcd and the other nodes, silently (dropped packets, as with a cut
# cable: connections time out). Clients, on this side of the bridge, still reach it.
cmd_partition() {
    [ $# -eq 1 ] || usage
    load_env
    [ -n "$SUBNET" ] || die "partition needs a cluster started with --netns"
    local name=$1 i peers=$ETCD_HOST
    node_index "$name" >/dev/null
    for i in 0 1 2; do
        if [ "${NODES[$i]}" != "$name" ]; then peers="$peers, ${NODE_HOSTS[$i]}"; fi
    done
    # Declaring and deleting the table first makes a second partition replace the first.
    ip netns exec "$(ns_of "$name")" nft -f - <<EOF
table inet citypay_cut
delete table inet citypay_cut
table inet citypay_cut {
    chain input { type filter hook input priority 0; policy accept; ip saddr { $peers } drop; }
    chain output { type filter hook output priority 0; policy accept; ip daddr { $peers } drop; }
}
EOF
}

cmd_heal() {
    [ $# -eq 1 ] || usage
    load_env
    [ -n "$SUBNET" ] || die "heal needs a cluster started with --netns"
    node_index "$1" >/dev/null
    ip netns exec "$(ns_of "$1")" nft delete table inet citypay_cut 2>/dev/null || true
}

cmd_wait_healthy() {
    load_env
    wait_healthy "${1:-60}"
}

# Starts N `citypay serve` (default 3) of the city on this cluster: the first run makes the
# city's key set (DIR/keys; every server takes it, none mints keys) and the city Hangzhou with
# the platform operator `root` (password $CITYPAY_OPERATOR_PASSWORD, default "choose one").
# Server i listens on 127.0.0.1:$((8080 + i)) (HTTP; $CITYPAY_SERVE_PORT_BASE moves it) and
# 127.0.0.1:$((7080 + i)) (the other servers' commands). stop ends them first.
cmd_serve() {
    local count=${1:-3} bin=${CITYPAY_BIN:-citypay} i template leader_url name port
    load_env
    command -v "$bin" >/dev/null || die "no citypay binary: put it on PATH or set CITYPAY_BIN"
    bin=$(command -v "$bin")
    template=${CITYPAY_PG_URL_TEMPLATE//\{node\}/leader}
    if [ ! -e "$DIR/keys" ]; then
        "$bin" keys new "$DIR/keys" >/dev/null
        read -r name port < <(cmd_leader)
        leader_url=${CITYPAY_PG_URL_TEMPLATE//\{node\}/${NODE_HOSTS[$(node_index "$name")]}:$port}
        "$bin" admin onboard-city --db "$leader_url" --keys "$DIR/keys" --code 330100 --name Hangzhou >/dev/null
        CITYPAY_OPERATOR_PASSWORD=${CITYPAY_OPERATOR_PASSWORD:-choose one} \
            "$bin" admin create-operator --db "$leader_url" --keys "$DIR/keys" --username root >/dev/null
    fi
    mkdir -p "$DIR/serve"
    for ((i = 1; i <= count; i++)); do
        launch "serve-$i" serve "serve-$i.log" "" "$bin" serve --db "$template" --keys "$DIR/keys" \
            --addr "127.0.0.1:$((${CITYPAY_SERVE_PORT_BASE:-8080} + i))" \
            --cluster-listen "127.0.0.1:$((${CITYPAY_SERVE_PORT_BASE:-8080} - 1000 + i))" \
            --etcd "$CITYPAY_ETCD" --patroni-scope "/service/$SCOPE"
        say "server $i: http://127.0.0.1:$((${CITYPAY_SERVE_PORT_BASE:-8080} + i)) (log $DIR/logs/serve-$i.log)"
    done
}

case "$COMMAND" in
start) cmd_start "$@" ;;
stop) cmd_stop "$@" ;;
status) cmd_status ;;
leader) cmd_leader ;;
kill-primary) cmd_kill_primary ;;
kill-patroni) cmd_kill_patroni "$@" ;;
kill-postgres) cmd_kill_postgres "$@" ;;
rejoin) cmd_rejoin "$@" ;;
wait-healthy) cmd_wait_healthy "$@" ;;
partition) cmd_partition "$@" ;;
heal) cmd_heal "$@" ;;
serve) cmd_serve "$@" ;;
etcdctl)
    load_env
    etcdctl_here "$@"
    ;;
*) usage ;;
esac
