#!/usr/bin/env bash
# ferry's main job on an example: stage a set of files with sha256 checks.
#
# Makes 24 files (1-8 MiB), serves half of them over HTTP on 127.0.0.1, writes
# a pegasus-transfer JSON list with each file's expected sha256 (one file has a
# dead first replica, to show the fallback), and runs `ferry transfer` on it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash setup.sh
py=.venv/bin/python
work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-demo.XXXXXX")
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

mkdir -p "$work/inputs" "$work/www"
port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$py" -m http.server "$port" --bind 127.0.0.1 --directory "$work/www" >/dev/null 2>&1 &
server_pid=$!

"$py" - "$work" "$port" <<'PY'
import hashlib, json, os, random, sys
work, port = sys.argv[1], sys.argv[2]
random.seed(7)
entries = []
for i in range(24):
    name = f"sample-{i:02d}.dat"
    data = random.randbytes(random.randint(1, 8) << 20)
    where = "www" if i % 2 else "inputs"
    with open(os.path.join(work, where, name), "wb") as f:
        f.write(data)
    if where == "www":
        srcs = [{"site_label": "web", "url": f"http://127.0.0.1:{port}/{name}", "priority": 50}]
        if i == 1:  # a dead replica first: ferry falls back to the next one
            srcs.insert(0, {"site_label": "gone", "url": f"http://127.0.0.1:{port}/gone/{name}", "priority": 100})
    else:
        srcs = [{"site_label": "local", "url": f"file://{work}/inputs/{name}", "priority": 100}]
    entries.append({
        "type": "transfer", "lfn": name, "id": i + 1, "linkage": "input",
        "attributes": {"checksum.type": "sha256", "checksum.value": hashlib.sha256(data).hexdigest()},
        "src_urls": srcs,
        "dest_urls": [{"site_label": "scratch", "url": f"file://{work}/scratch/{name}"}],
    })
with open(os.path.join(work, "transfers.json"), "w") as f:
    json.dump(entries, f, indent=1)
PY

for _ in $(seq 50); do "$py" -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null && break; sleep 0.1; done
echo "== ferry transfer -f transfers.json  (24 files, sha256 checked)"
.venv/bin/ferry transfer -f "$work/transfers.json" --meta "$work/stage-in.meta"
echo "== staged files and the Pegasus .meta file written with their sums"
ls -l "$work/scratch" | head -5
echo "   ..."
head -c 400 "$work/stage-in.meta"; echo
