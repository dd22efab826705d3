# Shared by the interop scripts: ok/fail counting and installing missing peers.
# Source it after `set -euo pipefail`.

passed=0; failed=0
ok()   { echo "ok   $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1"; failed=$((failed + 1)); }

# install_missing PACKAGE... — install Debian packages (none given: nothing to do).
install_missing() {
    (( $# )) || return 0
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "$@" >/dev/null
}

# postfix_main_cf DIR HOSTNAME LOG_PREFIX: the main.cf lines every private Postfix
# instance here shares (its queue, data and log under DIR, no local delivery, only
# loopback clients); the caller appends its own lines.
postfix_main_cf() {
    cat <<CF
compatibility_level = 3.6
queue_directory = $1/queue
data_directory = $1/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = $1/maillog
maillog_file_prefixes = $3
inet_interfaces = all
inet_protocols = ipv4
myhostname = $2
mydestination =
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
CF
}

# postfix_master_cf LISTEN: a master.cf for a private Postfix instance whose smtpd
# listens on LISTEN (IP:PORT), with the daemons a relay and a virtual(8) mailbox
# need and nothing that runs as a service of the machine.
postfix_master_cf() {
    cat <<CF
$1 inet n - n - - smtpd
pickup     unix n - n 60 1 pickup
cleanup    unix n - n - 0 cleanup
qmgr       unix n - n 300 1 qmgr
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
virtual    unix - n n - - virtual
anvil      unix - - n - 1 anvil
scache     unix - - n - 1 scache
postlog    unix-dgram n - n - 1 postlogd
CF
}
