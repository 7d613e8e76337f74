#!/usr/bin/env bash
# ferry's main job end to end: a workflow written with the Pegasus Python API,
# planned and run on this machine, every job through the real worker.
#
# The seed's "pipeline" (curl a page, count its lines) with the page served by a
# local HTTP server on 127.0.0.1, plus a small fan-out/fan-in: the page is split
# into 4 parts, each part's words are counted, and the counts are merged. Each
# job's inputs made by another job are checked against the sha256 the producer's
# worker recorded; `ferry statistics` shows the table (with those checks).
set -euo pipefail
cd "$(dirname "$0")/.."
bash setup.sh
repo=$(pwd)
py="$repo/.venv/bin/python"
ferry="$repo/.venv/bin/ferry"
"$py" -m pip install -q --disable-pip-version-check "pegasus-wms-api>=5.1"
work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-wf-demo.XXXXXX")
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

mkdir -p "$work/www" "$work/bin"
port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$py" - "$work/www/index.html" <<'PY'
import random, sys
random.seed(3)
words = ["workflow", "pegasus", "ferry", "sha256", "transfer", "node", "job", "data"]
with open(sys.argv[1], "w") as f:
    for i in range(400):
        f.write(" ".join(random.choice(words) for _ in range(12)) + "\n")
PY
"$py" -m http.server "$port" --bind 127.0.0.1 --directory "$work/www" >/dev/null 2>&1 &
server_pid=$!

# small stand-ins for the tools (stageable executables from the transformation catalog)
cat > "$work/bin/split.py" <<'PY'
#!/usr/bin/env python3
import sys
lines = open(sys.argv[1]).readlines()
n = int(sys.argv[2])
for i in range(n):
    with open(f"part{i}.txt", "w") as f:
        f.writelines(lines[i::n])
PY
cat > "$work/bin/words.py" <<'PY'
#!/usr/bin/env python3
import collections, json, sys
counts = collections.Counter(open(sys.argv[1]).read().split())
json.dump(counts, open(sys.argv[2], "w"))
PY
cat > "$work/bin/merge.py" <<'PY'
#!/usr/bin/env python3
import collections, json, sys
total = collections.Counter()
for path in sys.argv[2:]:
    total.update(json.load(open(path)))
with open(sys.argv[1], "w") as f:
    for word, n in total.most_common():
        f.write(f"{word} {n}\n")
PY
chmod +x "$work"/bin/*.py

cd "$work"
"$py" - "$port" <<'PY'
import sys
from Pegasus.api import File, Job, Transformation, TransformationCatalog, Workflow

port = sys.argv[1]
wf = Workflow("pipeline")
tc = TransformationCatalog()
for name in ("split", "words", "merge"):
    tc.add_transformations(Transformation(name, site="local", pfn=f"{__import__('os').getcwd()}/bin/{name}.py",
                                          is_stageable=True))
for name, pfn in (("curl", "/usr/bin/curl"), ("wc", "/usr/bin/wc")):
    tc.add_transformations(Transformation(name, site="local", pfn=pfn, is_stageable=False))
wf.add_transformation_catalog(tc)

page, count = File("pegasus.html"), File("count.txt")
curl = (Job("curl").add_args("-s", "-o", page, f"http://127.0.0.1:{port}/index.html")
        .add_outputs(page, stage_out=False, register_replica=False))
wc = Job("wc").add_args("-l", page).add_inputs(page).set_stdout(count, stage_out=True, register_replica=True)
parts = [File(f"part{i}.txt") for i in range(4)]
split = Job("split").add_args(page, "4").add_inputs(page).add_outputs(*parts, stage_out=False,
                                                                      register_replica=False)
counts = []
for i, part in enumerate(parts):
    c = File(f"words{i}.json")
    counts.append(c)
    wf.add_jobs(Job("words").add_args(part, c).add_inputs(part).add_outputs(c, stage_out=False,
                                                                             register_replica=False))
total = File("wordcount.txt")
merge = Job("merge").add_args(total, *counts).add_inputs(*counts).add_outputs(total)
wf.add_jobs(curl, wc, split, merge)
wf.write("workflow.yml")
PY

echo "== ferry run workflow.yml   (8 jobs: curl -> wc, split -> 4 x words -> merge)"
"$ferry" run workflow.yml --dir "$work/run" --output-dir "$work/outputs"
echo "== outputs"
ls -l "$work/outputs"
head -3 "$work/outputs/wordcount.txt"
echo "== ferry statistics"
"$ferry" statistics "$work/run"
