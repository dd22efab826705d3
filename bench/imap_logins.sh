#!/usr/bin/env bash
# What a login costs: maildr (credential cache on, and off) beside Dovecot from
# Debian's packages, the same loop on the same machine in the same run. Each of
# CLIENTS clients loops connect, LOGIN, SELECT INBOX, FETCH 1, LOGOUT
# (`maildr bench imap --logins`; against Dovecot through `--server`), at most
# LOGINS_PER_CLIENT times and DURATION_MAX_SECS seconds per server.
#
# Dovecot gets the same password hash cost as maildr: the script reads the
# argon2id parameters of the hash maildr stored for its bench account (printed by
# the bench; `argon2::Argon2::default()` in crates/frontend/src/lib.rs) and
# makes Dovecot's passwd-file hash with Python's argon2-cffi at those m/t/p.
# Dovecot runs its own instance with its own config on 127.166.0.1:14300 (plain
# IMAP on loopback), once with its defaults (no auth cache) and once with
# `auth_cache_size = 10M`. Everything the script starts is stopped by pid, and
# its directory removed. Needs root (Dovecot drops privileges to the mail user);
# installs dovecot-imapd and python3-argon2 when missing.
#
#   cargo build --release -p maildr && bash bench/imap_logins.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MAILDR=$(realpath "${MAILDR:-target/release/maildr}")
CLIENTS=${CLIENTS:-10}
LOGINS_PER_CLIENT=${LOGINS_PER_CLIENT:-200}
DURATION_MAX_SECS=${DURATION_MAX_SECS:-60}
DOVECOT_IP=127.166.0.1
DOVECOT_PORT=14300
MAILDR_LISTEN=127.166.0.2:0

[[ $(id -u) -eq 0 ]] || { echo "imap_logins.sh: run as root (Dovecot drops privileges)" >&2; exit 1; }
missing=()
[[ -x /usr/lib/dovecot/imap ]] || missing+=(dovecot-imapd)
# Debian's Python, where python3-argon2 installs (not whatever python3 is first on PATH).
PY=/usr/bin/python3
"$PY" -c 'import argon2' 2>/dev/null || missing+=(python3-argon2)
if (( ${#missing[@]} )); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The distribution's own Dovecot (started by the installer) is not the one measured.
service dovecot stop >/dev/null 2>&1 || true

WORK=$(mktemp -d)
chmod 755 "$WORK"
DOVECOT_PID=""
cleanup() {
    local status=$?
    if (( status != 0 )) && [[ -f $WORK/dovecot.log ]]; then
        echo "== the end of Dovecot's log" >&2
        tail -20 "$WORK/dovecot.log" >&2
    fi
    if [[ -n "$DOVECOT_PID" ]] && kill -0 "$DOVECOT_PID" 2>/dev/null; then
        kill -TERM "$DOVECOT_PID"
        for _ in $(seq 1 50); do kill -0 "$DOVECOT_PID" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "== machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'); maildr $(git rev-parse --short HEAD 2>/dev/null || echo '?'); $(dovecot --version | sed 's/^/Dovecot /')"
echo "== maildr (private site on $MAILDR_LISTEN)"
maildr_out=$("$MAILDR" bench imap --logins --clients "$CLIENTS" --logins-per-client "$LOGINS_PER_CLIENT" \
    --duration-max-secs "$DURATION_MAX_SECS" --listen "$MAILDR_LISTEN")
echo "$maildr_out"
params=$(sed -n 's/^maildr.s stored hash: argon2id //p' <<<"$maildr_out")
[[ $params =~ ^m=([0-9]+),t=([0-9]+),p=([0-9]+)$ ]] || { echo "no argon2id parameters in maildr's output" >&2; exit 1; }
M=${BASH_REMATCH[1]} T=${BASH_REMATCH[2]} P=${BASH_REMATCH[3]}

# Dovecot: one user, one message in its INBOX, the same password at the same cost.
HASH=$("$PY" -c 'import argon2, sys
m, t, p = map(int, sys.argv[1:4])
print(argon2.PasswordHasher(time_cost=t, memory_cost=m, parallelism=p, type=argon2.Type.ID).hash("bench-pw"))' "$M" "$T" "$P")
[[ $HASH == "\$argon2id\$v=19\$m=$M,t=$T,p=$P\$"* ]] || { echo "unexpected hash $HASH" >&2; exit 1; }
MAIL_UID=$(id -u mail) MAIL_GID=$(id -g mail)
echo "reader:{ARGON2ID}$HASH:$MAIL_UID:$MAIL_GID::$WORK/home/reader::" > "$WORK/users"
mkdir -p "$WORK/run" "$WORK/state" "$WORK/home/reader/Maildir/"{new,cur,tmp}
printf 'From: a@bench.test\r\nTo: reader@bench.test\r\nSubject: one\r\n\r\nthe one message\r\n' \
    > "$WORK/home/reader/Maildir/new/1.bench"
chown -R mail:mail "$WORK/home"

start_dovecot() { # AUTH_CACHE_SIZE
    cat > "$WORK/dovecot.conf" <<CF
instance_name = maildr-bench-dovecot
base_dir = $WORK/run
state_dir = $WORK/state
protocols = imap
listen = $DOVECOT_IP
log_path = $WORK/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
auth_cache_size = $1
mail_location = maildir:~/Maildir
first_valid_uid = $MAIL_UID
passdb {
  driver = passwd-file
  args = username_format=%n $WORK/users
}
userdb {
  driver = passwd-file
  args = username_format=%n $WORK/users
}
# The loop's clients are one user from one address: Dovecot's default of 10
# such connections would refuse a client whose previous LOGOUT is still being
# torn down (maildr's bench raises its per-account session limit alike).
mail_max_userip_connections = 100
service imap-login {
  inet_listener imap {
    port = $DOVECOT_PORT
  }
  inet_listener imaps {
    port = 0
  }
}
CF
    dovecot -c "$WORK/dovecot.conf"
    for _ in $(seq 1 100); do
        [[ -s $WORK/run/master.pid ]] && (exec 3<>"/dev/tcp/$DOVECOT_IP/$DOVECOT_PORT") 2>/dev/null && break
        sleep 0.1
    done
    DOVECOT_PID=$(cat "$WORK/run/master.pid")
}

stop_dovecot() {
    kill -TERM "$DOVECOT_PID"
    for _ in $(seq 1 50); do kill -0 "$DOVECOT_PID" 2>/dev/null || break; sleep 0.1; done
    DOVECOT_PID=""
}

dovecot_out=""
for cache in 0 10M; do
    start_dovecot "$cache"
    echo "== Dovecot (auth_cache_size = $cache) on $DOVECOT_IP:$DOVECOT_PORT, passwd-file {ARGON2ID} m=$M,t=$T,p=$P"
    out=$("$MAILDR" bench imap --logins --clients "$CLIENTS" --logins-per-client "$LOGINS_PER_CLIENT" \
        --duration-max-secs "$DURATION_MAX_SECS" --server "$DOVECOT_IP:$DOVECOT_PORT" --user reader --password bench-pw)
    echo "$out"
    dovecot_out+="${out/logins ($DOVECOT_IP:$DOVECOT_PORT)/logins (Dovecot, auth_cache_size = $cache)}"$'\n'
    stop_dovecot
done

echo "== summary ($CLIENTS clients; login, SELECT INBOX, FETCH 1, LOGOUT per loop)"
grep '^logins' <<<"$maildr_out"
grep '^logins' <<<"$dovecot_out"
