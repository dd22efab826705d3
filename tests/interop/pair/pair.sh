#!/usr/bin/env bash
# A mail system that is not maildr, to drill: stock Postfix and Dovecot from
# Debian's packages as an active/standby pair on loopback, the way many companies
# run mail across two rooms today.
#
#   site pa (127.150.0.1) and site pb (127.150.0.2), each: Postfix on :25 (MX) and
#   :587 (submission, STARTTLS, SASL through Dovecot), delivering over LMTP to its
#   own Dovecot (IMAP :143, IMAPS :993, doveadm server :2727);
#   replication: the active site runs `doveadm sync -A` (two-way dsync) to the
#   other every SYNC_EVERY seconds; mail acknowledged since the last sync exists
#   on the active site only;
#   Knot DNS on 127.150.0.53:53 serves pair.test; mail. and MX name the active site;
#   a watchdog (the pair's failover automation, as keepalived would be) checks the
#   active site's SMTP every second and, after WATCHDOG_MISSES failed checks in a
#   row, makes the standby active and moves mail. and MX there with an RFC 2136
#   update (nsupdate, TSIG).
#
# Usage: pair.sh DIR up | down | kill SITE | start SITE | switchover SITE | active
# `up` writes DIR/deployment.toml: the drill's deployment file for this pair, whose
# hooks call this script back. Every process is started and stopped by its pid.
set -euo pipefail

DIR=${1:?usage: pair.sh DIR up|down|kill SITE|start SITE|switchover SITE|active}
ACTION=${2:?usage: pair.sh DIR up|down|kill SITE|start SITE|switchover SITE|active}
SITE=${3:-}
SELF=$(realpath "${BASH_SOURCE[0]}")
NET=${PAIR_NET:-127.150}
DOMAIN=pair.test
DNS_IP=$NET.0.53
SYNC_EVERY=${PAIR_SYNC_EVERY:-5}
WATCHDOG_MISSES=${PAIR_WATCHDOG_MISSES:-3}
DOVEADM_PORT=2727

ip_of() { case "$1" in pa) echo "$NET.0.1" ;; pb) echo "$NET.0.2" ;; *) echo "no site $1 (pa or pb)" >&2; exit 2 ;; esac; }
other() { case "$1" in pa) echo pb ;; pb) echo pa ;; esac; }
log() { echo "$(date -u +%H:%M:%S.%3N) $*" >> "$DIR/pair.log"; }
# A process that runs (a zombie waiting to be reaped counts as gone).
running() { [[ -r "/proc/$1/stat" ]] && [[ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]]; }
alive() { [[ -f "$1" ]] && running "$(tr -dc 0-9 < "$1")"; }

# Stop the processes in pid files (and their children) with one signal, all at
# once, and wait until they are gone.
stop_pids() {
    local signal=$1 file pids=()
    shift
    for file in "$@"; do
        [[ -f "$file" ]] || continue
        pids+=("$(tr -dc 0-9 < "$file")")
        rm -f "$file"
    done
    (( ${#pids[@]} )) || return 0
    local children
    children=$(pgrep -d' ' -P "$(IFS=,; echo "${pids[*]}")" || true)
    # shellcheck disable=SC2086
    kill "-$signal" "${pids[@]}" $children 2>/dev/null || true
    for _ in $(seq 1 100); do
        local left=0 pid
        for pid in "${pids[@]}" $children; do running "$pid" && left=1; done
        (( left )) || return 0
        sleep 0.05
    done
}

dns_point_at() { # SITE: mail. and MX at SITE
    local ip
    ip=$(ip_of "$1")
    nsupdate -y "hmac-sha256:pair-update:$(cat "$DIR/tsig.secret")" <<UPDATE
server $DNS_IP 53
zone $DOMAIN
update delete mail.$DOMAIN A
update add mail.$DOMAIN 5 A $ip
update delete $DOMAIN MX
update add $DOMAIN 5 MX 10 $1.$DOMAIN.
send
UPDATE
}

write_site_config() { # SITE
    local s=$1 ip d q
    ip=$(ip_of "$s")
    d=$DIR/$s
    q=$d/postfix/queue
    mkdir -p "$d/postfix/etc" "$q" "$d/postfix/data" "$d/dovecot/run" "$d/dovecot/state" "$d/mail"
    chown mail:mail "$d/mail"
    chown postfix "$d/postfix/data"
    cat > "$d/postfix/etc/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $q
data_directory = $d/postfix/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = $d/postfix/maillog
maillog_file_prefixes = $DIR
# Each listener names its address in master.cf (a loopback address is no
# interface address of its own, which inet_interfaces would insist on).
inet_interfaces = all
inet_protocols = ipv4
myhostname = $s.$DOMAIN
mydomain = $DOMAIN
mydestination =
mynetworks = $ip/32
alias_maps =
alias_database =
append_dot_mydomain = no
biff = no
virtual_mailbox_domains = $DOMAIN
virtual_mailbox_maps = texthash:$DIR/mailboxes
virtual_transport = lmtp:unix:$d/dovecot/run/lmtp
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtpd_tls_cert_file = $DIR/tls/server.pem
smtpd_tls_key_file = $DIR/tls/server.key
smtpd_tls_security_level = may
smtpd_sasl_type = dovecot
smtpd_sasl_path = private/auth
smtpd_sasl_auth_enable = no
CF
    cat > "$d/postfix/etc/master.cf" <<CF
$ip:25     inet n - n - - smtpd
$ip:587    inet n - n - - smtpd
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
pickup     unix n - n 60 1 pickup
cleanup    unix n - n - 0 cleanup
qmgr       unix n - n 300 1 qmgr
tlsmgr     unix - - n 1000? 1 tlsmgr
rewrite    unix - - n - - trivial-rewrite
bounce     unix - - n - 0 bounce
defer      unix - - n - 0 bounce
trace      unix - - n - 0 bounce
verify     unix - - n - 1 verify
flush      unix n - n 1000? 0 flush
proxymap   unix - - n - - proxymap
smtp       unix - - n - - smtp
relay      unix - - n - - smtp
showq      unix n - n - - showq
error      unix - - n - - error
retry      unix - - n - - error
discard    unix - - n - - discard
lmtp       unix - - n - - lmtp
anvil      unix - - n - 1 anvil
scache     unix - - n - 1 scache
postlog    unix-dgram n - n - 1 postlogd
CF
    cat > "$d/dovecot/dovecot.conf" <<CF
instance_name = dovecot-pair-$s
base_dir = $d/dovecot/run
state_dir = $d/dovecot/state
protocols = imap lmtp
listen = $ip
log_path = $d/dovecot/dovecot.log
ssl = yes
ssl_cert = <$DIR/tls/server.pem
ssl_key = <$DIR/tls/server.key
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
first_valid_uid = 8
mail_fsync = always
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $DIR/users
}
userdb {
  driver = passwd-file
  args = username_format=%u $DIR/users
  default_fields = uid=mail gid=mail home=$d/mail/%d/%n
}
service imap-login {
  inet_listener imap {
    port = 143
  }
  inet_listener imaps {
    port = 993
    ssl = yes
  }
}
service lmtp {
  unix_listener lmtp {
    mode = 0666
  }
}
service auth {
  unix_listener $q/private/auth {
    mode = 0660
    user = postfix
    group = postfix
  }
}
service doveadm {
  inet_listener {
    port = $DOVEADM_PORT
  }
}
doveadm_port = $DOVEADM_PORT
doveadm_password = $(cat "$DIR/doveadm.secret")
protocol lmtp {
  postmaster_address = postmaster@$DOMAIN
}
CF
}

start_site() { # SITE: Postfix, Dovecot and the site's replication loop
    local s=$1 d=$DIR/$1
    if ! alive "$d/dovecot/run/master.pid"; then
        # Dovecot's SASL socket lives in Postfix's private directory, which
        # Postfix wants as its own.
        mkdir -p "$d/postfix/queue/private"
        chown postfix "$d/postfix/queue/private"
        chmod 700 "$d/postfix/queue/private"
        # The daemons must not hold the caller's output open (a drill hook
        # waits for it to close).
        dovecot -c "$d/dovecot/dovecot.conf" >> "$d/dovecot/start.log" 2>&1
    fi
    if ! alive "$d/postfix/queue/pid/master.pid"; then
        postfix -c "$d/postfix/etc" start >> "$d/postfix/start.log" 2>&1
    fi
    if ! alive "$d/sync.pid"; then
        # Runs on the site; syncs only while the site is the active one.
        nohup bash -c '
            while true; do
                if [[ "$(cat "$0/active")" == "$1" ]]; then
                    doveadm -c "$0/$1/dovecot/dovecot.conf" sync -A "tcp:$2:$3" >> "$0/$1/sync.log" 2>&1 || true
                fi
                sleep "$4"
            done' "$DIR" "$s" "$(ip_of "$(other "$s")")" "$DOVEADM_PORT" "$SYNC_EVERY" > /dev/null 2>&1 &
        echo $! > "$d/sync.pid"
    fi
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/$(ip_of "$s")/25") 2>/dev/null && (exec 3<>"/dev/tcp/$(ip_of "$s")/993") 2>/dev/null && break
        sleep 0.1
    done
    log "started $s"
}

kill_site() { # SITE: everything on it dies at once (SIGKILL), disks survive
    local d=$DIR/$1
    stop_pids KILL "$d/sync.pid" "$d/postfix/queue/pid/master.pid" "$d/dovecot/run/master.pid"
    log "killed $1"
}

case "$ACTION" in
up)
    for bin in postfix dovecot doveadm knotd nsupdate openssl; do
        command -v "$bin" >/dev/null || { echo "pair.sh: $bin is missing" >&2; exit 2; }
    done
    mkdir -p "$DIR"
    DIR=$(realpath "$DIR")
    chmod 755 "$DIR"
    : > "$DIR/pair.log"
    mkdir -p "$DIR/tls" "$DIR/secrets" "$DIR/knot/run" "$DIR/knot/db" "$DIR/knot/zones"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=pair test CA" \
        -keyout "$DIR/tls/ca.key" -out "$DIR/tls/ca.pem" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=mail.$DOMAIN" \
        -keyout "$DIR/tls/server.key" -out "$DIR/tls/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:mail.%s,DNS:pa.%s,DNS:pb.%s,IP:%s,IP:%s\n' \
        "$DOMAIN" "$DOMAIN" "$DOMAIN" "$(ip_of pa)" "$(ip_of pb)" > "$DIR/tls/san.ext"
    openssl x509 -req -in "$DIR/tls/server.csr" -CA "$DIR/tls/ca.pem" -CAkey "$DIR/tls/ca.key" \
        -CAcreateserial -days 2 -extfile "$DIR/tls/san.ext" -out "$DIR/tls/server.pem" 2>/dev/null
    chmod 644 "$DIR/tls/server.key"
    head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$DIR/doveadm.secret"
    head -c 32 /dev/urandom | base64 > "$DIR/tsig.secret"
    : > "$DIR/users"; : > "$DIR/mailboxes"
    for user in probe alice bob postmaster; do
        head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$DIR/secrets/$user"
        echo "$user@$DOMAIN:{PLAIN}$(cat "$DIR/secrets/$user")::::::" >> "$DIR/users"
        echo "$user@$DOMAIN OK" >> "$DIR/mailboxes"
    done
    chmod 644 "$DIR/users"
    cat > "$DIR/knot/zones/$DOMAIN.zone" <<ZONE
\$ORIGIN $DOMAIN.
\$TTL 5
@    SOA ns.$DOMAIN. hostmaster.$DOMAIN. 1 300 60 1209600 5
@    NS  ns.$DOMAIN.
ns   A   $DNS_IP
pa   A   $(ip_of pa)
pb   A   $(ip_of pb)
mail A   $(ip_of pa)
@    MX  10 pa.$DOMAIN.
ZONE
    cat > "$DIR/knot/knot.conf" <<CONF
server:
    rundir: "$DIR/knot/run"
    listen: $DNS_IP@53
control:
    listen: "$DIR/knot/run/knot.sock"
log:
  - target: "$DIR/knot/knot.log"
    any: info
database:
    storage: "$DIR/knot/db"
key:
  - id: pair-update
    algorithm: hmac-sha256
    secret: $(cat "$DIR/tsig.secret")
acl:
  - id: pair-update
    key: pair-update
    action: update
template:
  - id: default
    storage: "$DIR/knot/zones"
    file: "%s.zone"
zone:
  - domain: $DOMAIN
    acl: pair-update
CONF
    nohup knotd --config "$DIR/knot/knot.conf" > /dev/null 2>&1 &
    echo $! > "$DIR/knot.pid"
    echo pa > "$DIR/active"
    write_site_config pa
    write_site_config pb
    start_site pa
    start_site pb
    # The standby starts as a copy of the active site: every account's INBOX is
    # made at pa and synced to pb before either serves anyone (two INBOXes made
    # apart get different GUIDs, and dsync would never merge them).
    for user in probe alice bob postmaster; do
        doveadm -c "$DIR/pa/dovecot/dovecot.conf" mailbox status -u "$user@$DOMAIN" guid INBOX > /dev/null
    done
    doveadm -c "$DIR/pa/dovecot/dovecot.conf" sync -A "tcp:$(ip_of pb):$DOVEADM_PORT"
    # The watchdog: the pair's own failover automation.
    nohup bash -c '
        misses=0
        while true; do
            active=$(cat "$0/active")
            if [[ "$active" == pa ]]; then ip=$1; standby=pb; else ip=$2; standby=pa; fi
            if timeout 1 bash -c "exec 3<>/dev/tcp/$ip/25 && head -c 3 <&3 | grep 220" > /dev/null 2>&1; then
                misses=0
            else
                misses=$((misses + 1))
                if (( misses >= $3 )); then
                    echo "$standby" > "$0/active"
                    echo "$(date -u +%H:%M:%S.%3N) watchdog: $active missed $misses checks, $standby made active" >> "$0/pair.log"
                    bash "$4" "$0" dns "$standby" >> "$0/pair.log" 2>&1 || true
                    misses=0
                fi
            fi
            sleep 1
        done' "$DIR" "$(ip_of pa)" "$(ip_of pb)" "$WATCHDOG_MISSES" "$SELF" > /dev/null 2>&1 &
    echo $! > "$DIR/watchdog.pid"
    for _ in $(seq 1 100); do
        [[ "$(dig @"$DNS_IP" +short +time=1 +tries=1 mail.$DOMAIN A 2>/dev/null || true)" == "$(ip_of pa)" ]] && break
        sleep 0.1
    done
    cat > "$DIR/deployment.toml" <<TOML
# The Postfix + Dovecot pair as the drill reaches it (written by pair.sh up).
domain = "$DOMAIN"
# No maildr control plane: the primary is the site DNS names for mail.
control = "none"
ca_file = "tls/ca.pem"
dns_servers = ["$DNS_IP:53"]

[accounts]
sender = { address = "probe@$DOMAIN", password_file = "secrets/probe" }
mx_recipient = { address = "alice@$DOMAIN", password_file = "secrets/alice" }
submission_recipient = { address = "bob@$DOMAIN", password_file = "secrets/bob" }

[[sites]]
name = "pa"
role = "data"
ip = "$(ip_of pa)"
imaps_port = 993

[[sites]]
name = "pb"
role = "data"
ip = "$(ip_of pb)"
imaps_port = 993

[hooks]
kill_site = ["bash", "$SELF", "$DIR", "kill", "{site}"]
start_site = ["bash", "$SELF", "$DIR", "start", "{site}"]
switchover = ["bash", "$SELF", "$DIR", "switchover", "{site}"]
TOML
    log "pair up: pa active, pb standby fed by doveadm sync every ${SYNC_EVERY}s"
    echo "pair up in $DIR: deployment file $DIR/deployment.toml"
    ;;
down)
    stop_pids TERM "$DIR/watchdog.pid"
    for s in pa pb; do
        stop_pids TERM "$DIR/$s/sync.pid"
        if alive "$DIR/$s/postfix/queue/pid/master.pid"; then postfix -c "$DIR/$s/postfix/etc" stop >/dev/null 2>&1 || true; fi
        stop_pids KILL "$DIR/$s/postfix/queue/pid/master.pid"
        stop_pids TERM "$DIR/$s/dovecot/run/master.pid"
    done
    stop_pids TERM "$DIR/knot.pid"
    ;;
kill)
    ip_of "$SITE" > /dev/null
    kill_site "$SITE"
    echo "$SITE killed (Postfix, Dovecot and its sync loop, SIGKILL)"
    ;;
start)
    ip_of "$SITE" > /dev/null
    start_site "$SITE"
    echo "$SITE started"
    ;;
dns)
    dns_point_at "$SITE"
    log "dns: mail. and MX at $SITE"
    ;;
switchover)
    # Planned: a last two-way sync from the active site, then the other is active.
    ip_of "$SITE" > /dev/null
    from=$(cat "$DIR/active")
    if [[ "$from" != "$SITE" ]]; then
        doveadm -c "$DIR/$from/dovecot/dovecot.conf" sync -A "tcp:$(ip_of "$SITE"):$DOVEADM_PORT"
        echo "$SITE" > "$DIR/active"
        dns_point_at "$SITE"
        log "switchover: $from -> $SITE"
    fi
    echo "$SITE is active (was $from)"
    ;;
active)
    cat "$DIR/active"
    ;;
*)
    echo "pair.sh: unknown action $ACTION" >&2
    exit 2
    ;;
esac
