#!/usr/bin/env bash
# mbsync (isync) and curl — IMAP clients no one here wrote — against a real maildr
# site over IMAPS: a full two-way sync of a mailbox with hundreds of messages, an
# incremental sync that transfers nothing, server-side changes picked up by the
# next sync, a local message pushed up; then curl lists and fetches over IMAPS.
# Needs: mbsync (Debian isync), curl, python3, a built maildr.
set -euo pipefail

MESSAGES=${MESSAGES:-300}
source "$(dirname "$0")/lib.sh"
start_site alice:alice-pw
MX=$(port smtp mx); IMAPS=$(port imap imaps)

python3 - "$MX" "$MESSAGES" <<'PY'
import smtplib, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
    for i in range(n):
        s.sendmail("load@outside.test", ["alice@example.test"], f"Subject: sync-{i}\r\nMessage-ID: <sync-{i}@test>\r\n\r\nbody {i}\r\n")
PY

mkdir -p "$WORK/mail"
cat > "$WORK/mbsyncrc" <<RC
IMAPAccount maildr
Host localhost
Port $IMAPS
User alice@example.test
Pass alice-pw
SSLType IMAPS
CertificateFile $CA
AuthMechs PLAIN

IMAPStore remote
Account maildr

MaildirStore local
Path $WORK/mail/
Inbox $WORK/mail/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns INBOX
Create Both
Expunge Both
Sync All
SyncState *
RC
sync() { mbsync -c "$WORK/mbsyncrc" -V sync 2>&1; }
count_local() { find "$WORK/mail/INBOX/cur" "$WORK/mail/INBOX/new" -type f | wc -l; }
server_count() { python3 - "$IMAPS" "$CA" <<'PY'
import imaplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2]); ctx.check_hostname = False
c = imaplib.IMAP4_SSL("127.0.0.1", int(sys.argv[1]), ssl_context=ctx)
c.login("alice@example.test", "alice-pw")
print(c.select("INBOX")[1][0].decode())
c.logout()
PY
}

out=$(sync) || { echo "$out" | tail -20; fail "first mbsync run"; }
[[ $(count_local) -eq $MESSAGES ]] && ok "full sync brought $MESSAGES messages" || fail "full sync: $(count_local) of $MESSAGES"

# "Transfers nothing": the local maildir is byte-for-byte the same set of files,
# and the server's INBOX state (messages, UIDNEXT, HIGHESTMODSEQ) did not move.
server_state() { python3 - "$IMAPS" "$CA" <<'PY'
import imaplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2]); ctx.check_hostname = False
c = imaplib.IMAP4_SSL("127.0.0.1", int(sys.argv[1]), ssl_context=ctx)
c.login("alice@example.test", "alice-pw")
print(c.status("INBOX", "(MESSAGES UIDNEXT HIGHESTMODSEQ)")[1][0].decode())
c.logout()
PY
}
local_before=$(cd "$WORK/mail" && find . -type f -not -name '.*' | sort)
server_before=$(server_state)
sync >/dev/null
local_after=$(cd "$WORK/mail" && find . -type f -not -name '.*' | sort)
server_after=$(server_state)
if [[ "$local_before" == "$local_after" && "$server_before" == "$server_after" ]]; then
    ok "second sync transfers nothing ($server_after)"
else
    fail "second sync changed something: server $server_before -> $server_after"
fi

python3 - "$IMAPS" "$CA" "$MX" <<'PY'
import imaplib, smtplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2]); ctx.check_hostname = False
c = imaplib.IMAP4_SSL("127.0.0.1", int(sys.argv[1]), ssl_context=ctx)
c.login("alice@example.test", "alice-pw"); c.select("INBOX")
c.store("1:10", "+FLAGS", "(\\Flagged)")
c.store("11", "+FLAGS", "(\\Deleted)"); c.expunge(); c.logout()
with smtplib.SMTP("127.0.0.1", int(sys.argv[3]), timeout=30) as s:
    for i in range(5):
        s.sendmail("late@outside.test", ["alice@example.test"], f"Subject: late-{i}\r\n\r\nlate\r\n")
PY
out=$(sync) || { echo "$out" | tail -20; fail "third mbsync run"; }
expected=$((MESSAGES - 1 + 5))
[[ $(count_local) -eq $expected ]] && ok "server-side new mail and expunge picked up ($expected local)" || fail "after server changes: $(count_local), expected $expected"
flagged=$(find "$WORK/mail/INBOX/cur" -type f -name '*:2,*F*' | wc -l)
[[ $flagged -eq 10 ]] && ok "server-side flags picked up (10 flagged locally)" || fail "flagged locally: $flagged"

printf 'From: alice@example.test\r\nSubject: written offline\r\n\r\nlocal draft\r\n' > "$WORK/mail/INBOX/new/$(date +%s).local.1:2,S"
sync >/dev/null
[[ "$(server_count)" -eq $((expected + 1)) ]] && ok "a local message is pushed to the server" || fail "server holds $(server_count), expected $((expected + 1))"

listing=$(curl -sS --cacert "$CA" --user alice@example.test:alice-pw "imaps://localhost:$IMAPS/")
grep -q 'INBOX' <<<"$listing" && grep -q 'Sent' <<<"$listing" && ok "curl lists mailboxes over IMAPS" || { echo "$listing"; fail "curl LIST"; }
fetched=$(curl -sS --cacert "$CA" --user alice@example.test:alice-pw "imaps://localhost:$IMAPS/INBOX;UID=2")
grep -q 'Subject: sync-1' <<<"$fetched" && ok "curl fetches a message by UID over IMAPS" || { echo "$fetched" | head; fail "curl FETCH"; }

stop_site
$MAILDR admin --data-dir "$DIR" check >/dev/null && ok "store check" || fail "store check"
echo "mbsync+curl: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
