#!/usr/bin/env bash
# The netns lab (`maildr lab up --netns`), proven with clients no one here wrote
# (Python's socket, imaplib and ssl, `ip`, `tc`):
# - every site runs in its own network namespace at its own address on the
#   virtual WAN (198.18.0.0/24), the clients in a fifth; `lab status --json`
#   names every namespace, and nothing of the lab exists in the root namespace;
# - the cluster status (from the clients' namespace) shows every member with its
#   certificate's expiry, and every observer's TLS probes see every site up;
# - a plaintext IMAP LOGIN from the clients' namespace is refused, IMAPS works;
# - `lab link set` acts on packets: a 40 ms link shows in TCP connect times
#   between the sites' namespaces and not on other links; 100 % loss stops
#   connections; a partition cuts them; heal restores them;
# - every drill scenario passes on it, the site-outage and partition drills with
#   RPO 0;
# - a lab whose processes all crashed, and a `lab up` killed half-way, leave
#   nothing behind once the next `lab up` or `lab down` ran: no namespace, no
#   device, no qdisc, no process.
# Needs: root, iproute2, python3, a built maildr.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"
MAILDR=$(realpath "${MAILDR:-target/debug/maildr}")
[[ $(id -u) == 0 ]] || { echo "netns_lab.sh needs root (network namespaces)"; exit 1; }
missing=()
command -v ip >/dev/null || missing+=(iproute2)
install_missing "${missing[@]}"

NET=127.97
PREFIX=maildr97-
WORK=$(mktemp -d)
LAB=$WORK/lab
lab() { "$MAILDR" lab "$@" --dir "$LAB"; }
cl() { ip netns exec "${PREFIX}client" "$@"; }
in_site() { local s=$1; shift; ip netns exec "$PREFIX$s" "$@"; }
namespaces() { ip netns list | awk '{print $1}' | grep "^$PREFIX" || true; }

cleanup() {
    "$MAILDR" lab down --dir "$LAB" >/dev/null 2>&1 || true
    for ns in $(namespaces); do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

links_before=$(ip -o link | wc -l)
qdiscs_before=$(tc qdisc show | wc -l)

lab up --netns --net "$NET" --json >"$WORK/up.json"
status=$(lab status --json)
if python3 - "$status" "$PREFIX" <<'PY'
import json, sys
s, prefix = json.loads(sys.argv[1]), sys.argv[2]
sites = {x["site"]: x for x in s["sites"]}
ok = all(x["netns"] == prefix + n and x["ip"].startswith("198.18.0.") and x["alive"] for n, x in sites.items())
ok = ok and s["netns"]["client"] == prefix + "client" and s["netns"]["wan"] == "198.18.0.0/24"
sys.exit(0 if ok and set(sites) == {"bj", "sh", "hz"} else 1)
PY
then ok "lab status --json names each site's namespace and address on the WAN"
else fail "lab status: $status"; fi

[[ $(namespaces | wc -l) == 4 ]] && ok "four namespaces: bj, sh, hz and the clients'" || fail "namespaces: $(namespaces)"
if ! ip -o addr | grep "198\.18\." >/dev/null && [[ $(ip -o link | wc -l) == "$links_before" ]]; then
    ok "the root namespace has no lab address and no new interface"
else fail "the root namespace changed: $(ip -o addr | grep 198.18. || true)"; fi
in_site bj ip -o addr show wan0 | grep "198.18.0.10/24" >/dev/null && ok "bj has 198.18.0.10 on its own wan0" \
    || fail "bj's wan0: $(in_site bj ip -o addr 2>&1)"

# The cluster from the clients' namespace, and every observer's TLS probes.
cluster=$(cl "$MAILDR" cluster status --config "$LAB/sites/bj/site.toml" 2>&1 || true)
[[ $(grep -c "cluster certificate expires" <<<"$cluster") == 3 ]] && grep -q "^primary: " <<<"$cluster" \
    && ! grep -q UNREACHABLE <<<"$cluster" \
    && ok "cluster status from the clients: a primary, three members, each certificate's expiry" \
    || fail "cluster status: $cluster"
TOKEN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api_token"])' "$LAB/lab.json")
health_ok=""
for _ in $(seq 1 60); do
    health=$(cl python3 - "$TOKEN" <<'PY' || true
import sys, urllib.request
req = urllib.request.Request("http://198.18.0.10:2780/api/health", headers={"Authorization": "Bearer " + sys.argv[1]})
print(urllib.request.urlopen(req, timeout=5).read().decode())
PY
)
    if python3 - "$health" <<'PY'
import json, sys
h = json.loads(sys.argv[1] or "{}")
obs = [o["observations"] for o in h.get("observers", []) if o.get("reachable") and o.get("observations")]
targets = [t for o in obs for t in o["targets"]]
ok = len(obs) == 3 and len(targets) == 6 and all(
    t["up"] and t["consecutive_failures"] == 0 and t["imap_ms"] is not None for t in targets)
sys.exit(0 if ok else 1)
PY
    then health_ok=yes; break; fi
    sleep 0.5
done
[[ -n "$health_ok" ]] && ok "all 3 observers see both data sites up over TLS" || fail "health: $health"

# Plaintext LOGIN from the clients' host is refused; IMAPS verified with the lab CA works.
if cl python3 - "$LAB/lab.json" >"$WORK/imap.out" 2>&1 <<'PY'
import imaplib, json, ssl, sys
lab = json.load(open(sys.argv[1]))
pw = {a["address"]: a["password"] for a in lab["accounts"]}["alice@example.test"]
plain = imaplib.IMAP4("198.18.0.20", 2143)
try:
    plain.login("alice@example.test", pw)
    sys.exit("plaintext LOGIN was accepted")
except imaplib.IMAP4.error as e:
    print("plain refused:", e)
ctx = ssl.create_default_context(cafile=lab["ca"])
tls = imaplib.IMAP4_SSL("198.18.0.20", 2993, ssl_context=ctx)
print(tls.login("alice@example.test", pw)[0])
tls.logout()
PY
then grep -q "PRIVACYREQUIRED" "$WORK/imap.out" && ok "plaintext IMAP LOGIN from the clients' namespace refused; IMAPS works" \
    || fail "imap: $(cat "$WORK/imap.out")"
else fail "imap: $(cat "$WORK/imap.out")"; fi

# Link faults act on packets between the sites' namespaces.
cat >"$WORK/connect.py" <<'PY'
import socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
times = []
for _ in range(n):
    start = time.monotonic()
    try:
        socket.create_connection((host, port), timeout=3).close()
        times.append((time.monotonic() - start) * 1000)
    except OSError:
        times.append(None)
print(" ".join("x" if t is None else f"{t:.1f}" for t in times))
PY
median() { tr ' ' '\n' | grep -v x | sort -n | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : -1)}'; }
lab link set bj-sh --latency-ms 40 >/dev/null
lab link set sh-bj --latency-ms 40 >/dev/null
slow=$(in_site bj python3 "$WORK/connect.py" 198.18.0.20 2700 5 | median)
other=$(in_site bj python3 "$WORK/connect.py" 198.18.0.30 2700 5 | median)
python3 -c "import sys; s,o=float(sys.argv[1]),float(sys.argv[2]); sys.exit(0 if 75 <= s <= 400 and o < 40 else 1)" "$slow" "$other" \
    && ok "40 ms each way on bj-sh: connect bj→sh ${slow} ms, bj→hz ${other} ms" \
    || fail "latency: bj→sh ${slow} ms, bj→hz ${other} ms"
lab link list | grep "^bj-sh .*40 ms" >/dev/null && ok "lab link list shows the fault" || fail "lab link list: $(lab link list)"
lab link set bj-sh --loss-percent 100 >/dev/null
lost=$(in_site bj python3 "$WORK/connect.py" 198.18.0.20 2700 2)
[[ $lost == "x x" ]] && ok "100 % packet loss on bj-sh: connections time out" || fail "loss: $lost"
lab link heal --all >/dev/null
lab link set sh-hz --partition >/dev/null
cut=$(in_site hz python3 "$WORK/connect.py" 198.18.0.20 2700 1)
back=$(in_site hz python3 "$WORK/connect.py" 198.18.0.10 2700 1)
[[ $cut == x && $back != x ]] && ok "a partition of sh-hz cuts hz→sh and not hz→bj" || fail "partition: hz→sh $cut, hz→bj $back"
lab link heal sh-hz >/dev/null
healed=$(in_site hz python3 "$WORK/connect.py" 198.18.0.20 2700 1)
[[ $healed != x ]] && ok "heal restores hz→sh" || fail "heal: $healed"
refused=$(lab link set bj-sh --loss-percent 101 2>&1 || true)
grep -q "101" <<<"$refused" && [[ $(lab link list --json | grep -c '"loss_percent": 0') == 12 ]] \
    && ok "a loss above 100 % is refused and changes nothing" || fail "refusal: $refused"

# Every drill scenario on the netns lab; site-outage and partition with RPO 0.
for scenario in site-outage partition node-failure dns-failure planned-switchover wan-degradation combined; do
    out=$WORK/drill-$scenario
    if "$MAILDR" drill run "$scenario" --lab-dir "$LAB" --report-dir "$out" --data-dir "$WORK/drills" \
        --confirm-manual netns-lab-test >"$out.log" 2>&1; then
        rpo=$(grep -m1 -o "lost [0-9][0-9]*" "$out.log")
        [[ $rpo == "lost 0" ]] && ok "drill $scenario passes on the netns lab ($rpo)" \
            || fail "drill $scenario: $rpo; $(tail -5 "$out.log")"
    else
        fail "drill $scenario failed: $(tail -15 "$out.log")"
    fi
done

# A crash of every lab process: the next lab up cleans up and starts afresh.
pids=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(" ".join(str(p) for p in [s["links"]["pid"]] + [x["pid"] for x in s["sites"]] if p))' "$LAB/lab.json")
kill -9 $pids
lab up --netns --net "$NET" >/dev/null
[[ $(namespaces | wc -l) == 4 ]] && lab status >/dev/null && ok "after a crash of every process, lab up starts a healthy lab" \
    || fail "lab up after a crash: $(namespaces)"

# A lab up killed half-way: lab down removes what it left.
"$MAILDR" lab down --dir "$LAB" >/dev/null
"$MAILDR" lab up --netns --net "$NET" --dir "$LAB" >/dev/null 2>&1 &
up_pid=$!
for _ in $(seq 1 200); do
    [[ -f $LAB/lab.json ]] && grep -q '"pid": [0-9]' "$LAB/lab.json" && break
    sleep 0.05
done
kill -9 "$up_pid"; wait "$up_pid" 2>/dev/null || true
half=$(namespaces | wc -l)
lab down >/dev/null
left=$(namespaces)
leftover_procs=$(pgrep -f "$LAB" || true)
if [[ $half -ge 1 && -z $left && -z $leftover_procs && ! -e $LAB ]]; then
    ok "lab down after a lab up killed half-way ($half namespaces) leaves no namespace and no process"
else fail "after a killed lab up: namespaces '$left', processes '$leftover_procs'"; fi
[[ $(ip -o link | wc -l) == "$links_before" && $(tc qdisc show | wc -l) == "$qdiscs_before" ]] \
    && ok "no interface and no qdisc left in the root namespace" || fail "root namespace: $(ip -o link)"

echo "netns lab: $passed passed, $failed failed"
(( failed == 0 ))
