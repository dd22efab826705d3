#!/usr/bin/env bash
# mbsync (isync, a mobile-like sync client no one here wrote) beside a
# Thunderbird-like Python imaplib session, against a real maildr site on
# 127.165.0.2:
# - a message mbsync marks forwarded (Maildir flag P, which isync syncs as the
#   keyword $Forwarded) is announced to the desktop session idling in INBOX with
#   FLAGS and PERMANENTFLAGS before the FETCH that shows the keyword;
# - a keyword the desktop sets ($Label1) is in the FLAGS and PERMANENTFLAGS of
#   mbsync's next SELECT, before any FETCH of mbsync's shows it (its protocol
#   trace, `mbsync -Dn`);
# - a mailbox the desktop created with a non-ASCII name (日本語, written
#   &ZeVnLIqe- on the wire) is synced by mbsync, and the store holds it as UTF-8.
# Needs: mbsync (Debian isync), python3, a built maildr.
set -euo pipefail

SITE_IP=127.165.0.2
source "$(dirname "$0")/lib.sh"
start_site alice:alice-pw
MX=$(port smtp mx); IMAP=$(port imap imap)

# Two messages in INBOX, one in 日本語 (created by the desktop, in modified UTF-7).
python3 - "$SITE_IP" "$MX" "$IMAP" <<'PY'
import imaplib, smtplib, sys
host, mx, imap = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with smtplib.SMTP(host, mx, timeout=30) as s:
    for i in range(2):
        s.sendmail("load@outside.test", ["alice@example.test"], f"Subject: mobile-{i}\r\nMessage-ID: <mobile-{i}@test>\r\n\r\nbody {i}\r\n")
c = imaplib.IMAP4(host, imap, timeout=30)
c.login("alice@example.test", "alice-pw")
assert c.create("&ZeVnLIqe-")[0] == "OK"
assert c.append("&ZeVnLIqe-", None, None, b"Subject: nihongo\r\n\r\nbody\r\n")[0] == "OK"
c.logout()
PY

mkdir -p "$WORK/mail"
cat > "$WORK/mbsyncrc" <<RC
IMAPAccount maildr
Host $SITE_IP
Port $IMAP
User alice@example.test
Pass alice-pw
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account maildr

MaildirStore local
Path $WORK/mail/
Inbox $WORK/mail/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
Sync All
SyncState *
RC
sync() { mbsync -c "$WORK/mbsyncrc" "$@" sync 2>&1; }

out=$(sync) || { echo "$out" | tail -20; fail "first mbsync run"; }
inbox=$(find "$WORK/mail/INBOX/cur" "$WORK/mail/INBOX/new" -type f | wc -l)
[[ $inbox -eq 2 ]] && ok "mbsync brought INBOX's 2 messages" || fail "INBOX: $inbox local messages"
# isync 1.4 keeps IMAP names as the server spells them (it does not decode
# modified UTF-7): its local folder is named &ZeVnLIqe-.
if [[ -d "$WORK/mail/&ZeVnLIqe-" ]]; then
    n=$(find "$WORK/mail/&ZeVnLIqe-/cur" "$WORK/mail/&ZeVnLIqe-/new" -type f | wc -l)
    [[ $n -eq 1 ]] && ok "mbsync synced the non-ASCII mailbox 日本語 (&ZeVnLIqe-, 1 message)" || fail "&ZeVnLIqe-: $n local messages"
else
    ls "$WORK/mail"; fail "mbsync made no local folder for 日本語 (&ZeVnLIqe-)"
fi

# The desktop idles in INBOX and reports what it was told, in order.
python3 - "$SITE_IP" "$IMAP" > "$WORK/desktop.log" 2>&1 <<'PY' &
import imaplib, re, sys, time
c = imaplib.IMAP4(sys.argv[1], int(sys.argv[2]), timeout=30)
c.login("alice@example.test", "alice-pw")
c.select("INBOX")
tag = c._new_tag()
c.send(tag + b" IDLE\r\n")
assert c.readline().startswith(b"+")
print("idling", flush=True)
lines = []
c.sock.settimeout(30)
while not any(re.match(r"\* \d+ FETCH .*\$Forwarded", l) for l in lines):
    line = c.readline()
    assert line, lines
    lines.append(line.rstrip(b"\r\n").decode())
idx = lambda p: next(i for i, l in enumerate(lines) if re.search(p, l))
fetch = idx(r"^\* \d+ FETCH .*\$Forwarded")
assert idx(r"^\* FLAGS \(.*\$Forwarded") < fetch, lines
assert idx(r"^\* OK \[PERMANENTFLAGS \(.*\$Forwarded") < fetch, lines
c.send(b"DONE\r\n")
print("announced first:", *lines, sep="\n  ", flush=True)
PY
DESKTOP=$!
for _ in $(seq 1 100); do grep -q idling "$WORK/desktop.log" && break; sleep 0.1; done

# The phone marks the first message forwarded: Maildir flag P, $Forwarded in IMAP.
msg=$(find "$WORK/mail/INBOX/cur" "$WORK/mail/INBOX/new" -type f | sort | head -1)
case "$msg" in
    *:2,*) mv "$msg" "${msg%%:2,*}:2,P${msg##*:2,}" ;;
    *) mv "$msg" "$WORK/mail/INBOX/cur/$(basename "$msg"):2,P" ;;
esac
out=$(sync) || { echo "$out" | tail -20; fail "mbsync pushing \$Forwarded"; }
if wait "$DESKTOP"; then
    ok "mbsync's \$Forwarded was announced (FLAGS, PERMANENTFLAGS) to the idling desktop before its FETCH"
else
    cat "$WORK/desktop.log"; fail "the idling desktop was not told of \$Forwarded first"
fi

# The desktop labels the second message; mbsync's next SELECT lists the label
# before any FETCH of mbsync's shows it.
python3 - "$SITE_IP" "$IMAP" <<'PY'
import imaplib, sys
c = imaplib.IMAP4(sys.argv[1], int(sys.argv[2]), timeout=30)
c.login("alice@example.test", "alice-pw")
c.select("INBOX")
assert c.store("2", "+FLAGS", "($Label1)")[0] == "OK"
c.logout()
PY
sync -Dn > "$WORK/trace.log" || { tail -20 "$WORK/trace.log"; fail "mbsync after \$Label1"; }
if python3 - "$WORK/trace.log" <<'PY'
import re, sys
lines = open(sys.argv[1], encoding="utf-8", errors="replace").read().splitlines()
select = next(i for i, l in enumerate(lines) if re.search(r'SELECT "?INBOX', l))
after = lambda p: next(i for i, l in enumerate(lines) if i > select and re.search(p, l))
flags, perm = after(r'\* FLAGS \(.*\$Label1'), after(r'PERMANENTFLAGS \(.*\$Label1')
shown = [i for i, l in enumerate(lines) if re.search(r'\* \d+ FETCH .*\$Label1', l)]
assert flags < min(shown + [len(lines)]) and perm < min(shown + [len(lines)]), (flags, perm, shown)
print("     mbsync was told:", lines[flags].strip(), "/", lines[perm].strip())
PY
then
    ok "mbsync's SELECT announced \$Label1 in FLAGS and PERMANENTFLAGS before any FETCH showed it"
else
    grep -E 'FLAGS|SELECT' "$WORK/trace.log" | head -20; fail "mbsync's SELECT did not announce \$Label1 first"
fi
forwarded=$(find "$WORK/mail/INBOX/cur" "$WORK/mail/INBOX/new" -type f -name '*:2,*P*' | wc -l)
[[ $forwarded -eq 1 ]] && ok "the forwarded mark survives mbsync's round trip" || fail "forwarded locally: $forwarded"

stop_site
mailboxes=$($MAILDR admin --data-dir "$DIR" mailboxes alice@example.test)
grep -q $'^日本語\t' <<<"$mailboxes" && ok "the store holds 日本語 as UTF-8" || { echo "$mailboxes"; fail "日本語 not stored as UTF-8"; }
$MAILDR admin --data-dir "$DIR" check >/dev/null && ok "store check" || fail "store check"
echo "mbsync keywords+names: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
