"""`ferry run` end to end: real worker for every job, real files, real nginx; monitoring commands."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import yaml

from Pegasus.api import (  # isort: skip
    File,
    Job,
    ReplicaCatalog,
    Transformation,
    TransformationCatalog,
    Workflow,
)

from .helpers import (
    PY,
    events,
    ferry,
    ferry_bg,
    files_under,
    journal,
    plan_doc,
    records,
    script,
    sha,
    wait_for,
)


def write(tmp: Path, wf: Workflow, name: str = "workflow.yml") -> str:
    wf.write(str(tmp / name))
    return name


def ok(res) -> None:  # type: ignore[no-untyped-def]
    assert res.returncode == 0, f"exit {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"


# --- the seed's pipeline, with the page served by nginx on 127.0.0.1 ---------------------


def test_seed_pipeline(tmp_path: Path, nginx_server) -> None:  # type: ignore[no-untyped-def]
    page = "".join(f"<p>line {i}</p>\n" for i in range(17))
    (nginx_server.root / "pegasus").mkdir(exist_ok=True)
    (nginx_server.root / "pegasus" / "index.html").write_text(page)
    url = f"{nginx_server.url}/pegasus/index.html"

    # the seed's example, word for word but for the URL
    wf = Workflow("pipeline")
    webpage = File("pegasus.html")
    curl_job = (
        Job("curl")
        .add_args("-o", webpage, url)
        .add_outputs(webpage, stage_out=False, register_replica=False)
    )
    count = File("count.txt")
    wc_job = Job("wc").add_args("-l", webpage).add_inputs(webpage).set_stdout(
        count, stage_out=True, register_replica=True
    )
    wf.add_jobs(curl_job, wc_job)
    wf.add_dependency(wc_job, parents=[curl_job])
    wf.write(str(tmp_path / "workflow.yml"))

    res = ferry("run", "workflow.yml", "--dir", "run", "-O", "outputs", cwd=tmp_path)
    ok(res)
    run = tmp_path / "run"
    assert (tmp_path / "outputs" / "count.txt").read_text() == "17 pegasus.html\n"
    # the intermediate page was staged, read, and cleaned up (inplace cleanup)
    assert not list(files_under(run / "scratch"))
    rc = yaml.safe_load((run / "replicas.out.yml").read_text())
    assert rc["replicas"] == [
        {
            "lfn": "count.txt",
            "pfns": [{"site": "local", "pfn": f"file://{tmp_path}/outputs/count.txt"}],
            "checksum": {"sha256": sha(b"17 pegasus.html\n")},
        }
    ]
    for job in ("ID0000001", "ID0000002"):
        (rec,) = records(run, job)
        assert rec["status"] == "succeeded" and rec["worker_exit_code"] == 0
    wc = records(run, "ID0000002")[0]
    assert wc["arguments"] == ["-l", "pegasus.html"]
    assert [(t["direction"], t["lfn"]) for t in wc["transfers"]] == [
        ("input", "pegasus.html"),
        ("output", "count.txt"),
    ]
    # the summary table at the end
    assert "Tasks          2         0       0           2         0         2" in res.stdout
    assert "Workflow succeeded" in res.stdout


# --- an Orcasound-shaped fan-out / fan-in -----------------------------------------------

SENSORS, BATCHES, TS = 2, 3, "1700000000"

CONVERT2WAV = """\
import os, sys
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(os.path.dirname(dst), exist_ok=True)
open(dst, "w").write("WAV " + open(src).read())
"""
SPECTROGRAM = """\
import os, sys
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(os.path.dirname(dst), exist_ok=True)
open(dst, "w").write("PNG " + open(src).read())
"""
INFERENCE = """\
import json, sys
model, wav, out, sensor, batch = sys.argv[1:6]
weight = int(open(model).read())
json.dump([{"sensor": sensor, "batch": batch, "score": weight * len(open(wav).read())}],
          open(out, "w"))
"""
MERGE = """\
import json, sys
out = sys.argv[1]
merged = []
for p in sys.argv[2:]:
    merged.extend(json.load(open(p)))
json.dump(sorted(merged, key=lambda r: (r["sensor"], r["batch"])), open(out, "w"))
"""


def orcasound(tmp: Path) -> Workflow:
    bin_ = tmp / "bin"
    bin_.mkdir(exist_ok=True)
    c2w = script(bin_ / "convert2wav.py", CONVERT2WAV)
    tc = TransformationCatalog().add_transformations(
        # stageable: staged into each job's work directory, its sha256 checked
        Transformation(
            "convert2wav", site="local", pfn=str(c2w), is_stageable=True,
            checksum={"sha256": sha(c2w.read_bytes())},
        ),
        # installed: used in place
        Transformation(
            "convert2spectrogram", site="local",
            pfn=str(script(bin_ / "spectrogram.py", SPECTROGRAM)),
        ),
        Transformation("inference", site="local", pfn=str(script(bin_ / "inference.py", INFERENCE))),
        Transformation("merge_predictions", site="local", pfn=str(script(bin_ / "merge.py", MERGE))),
    )
    data = tmp / "data"
    rc = ReplicaCatalog()
    (data / "model").mkdir(parents=True, exist_ok=True)
    (data / "model" / "orca_model").write_text("3")
    rc.add_replica("local", "orca_model", str(data / "model" / "orca_model"),
                   checksum={"sha256": sha(b"3")})
    wf = Workflow("orcasound").add_transformation_catalog(tc).add_replica_catalog(rc)
    model = File("orca_model")
    all_sensor_preds = []
    for s in range(1, SENSORS + 1):
        preds = []
        for b in range(1, BATCHES + 1):
            lfn = f"sensor_{s}/hls/{TS}/batch_{b}.ts"
            path = data / lfn
            path.parent.mkdir(parents=True, exist_ok=True)
            body = f"hydrophone s{s} b{b} " + "x" * (s * 10 + b)
            path.write_text(body)
            rc.add_replica("local", lfn, str(path), checksum={"sha256": sha(body.encode())})
            ts_file = File(lfn)
            wav = File(f"wav/sensor_{s}/{TS}/batch_{b}.wav")
            png = File(f"png/sensor_{s}/{TS}/batch_{b}.png")
            pred = File(f"predictions_sensor_{s}_{TS}_batch_{b}.json")
            wf.add_jobs(
                Job("convert2wav", _id=f"wav_s{s}_b{b}").add_args(ts_file, wav)
                .add_inputs(ts_file).add_outputs(wav, stage_out=False, register_replica=False),
                Job("convert2spectrogram", _id=f"png_s{s}_b{b}").add_args(wav, png)
                .add_inputs(wav).add_outputs(png),
                Job("inference", _id=f"inf_s{s}_b{b}")
                .add_args(model, wav, pred, f"sensor_{s}", f"batch_{b}")
                .add_inputs(model, wav).add_outputs(pred, stage_out=False, register_replica=False),
            )
            preds.append(pred)
        sensor_pred = File(f"predictions_sensor_{s}.json")
        wf.add_jobs(
            Job("merge_predictions", _id=f"merge_s{s}").add_args(sensor_pred, *preds)
            .add_inputs(*preds).add_outputs(sensor_pred)
        )
        all_sensor_preds.append(sensor_pred)
    final = File("predictions_all.json")
    wf.add_jobs(
        Job("merge_predictions", _id="merge_all").add_args(final, *all_sensor_preds)
        .add_inputs(*all_sensor_preds).add_outputs(final)
    )
    return wf


def expected_predictions() -> list[dict[str, object]]:
    out = []
    for s in range(1, SENSORS + 1):
        for b in range(1, BATCHES + 1):
            body = f"hydrophone s{s} b{b} " + "x" * (s * 10 + b)
            out.append({"sensor": f"sensor_{s}", "batch": f"batch_{b}", "score": 3 * len("WAV " + body)})
    return out


def test_orcasound_fan_out_fan_in_and_data_reuse(tmp_path: Path) -> None:
    write(tmp_path, orcasound(tmp_path))
    res = ferry("run", "workflow.yml", "--dir", "run1", "-O", "outputs", "-j", "2", cwd=tmp_path)
    ok(res)
    run, out = tmp_path / "run1", tmp_path / "outputs"
    assert json.loads((out / "predictions_all.json").read_text()) == expected_predictions()
    for s in range(1, SENSORS + 1):
        assert len(json.loads((out / f"predictions_sensor_{s}.json").read_text())) == BATCHES
        for b in range(1, BATCHES + 1):
            assert (out / f"png/sensor_{s}/{TS}/batch_{b}.png").read_text().startswith("PNG WAV hydro")
    assert not (out / "wav").exists()  # intermediate, not staged out
    jobs = {j["id"]: j for j in plan_doc(run)["jobs"]}
    assert len(jobs) == SENSORS * BATCHES * 3 + SENSORS + 1
    assert jobs["inf_s1_b2"]["parents"] == ["wav_s1_b2"]
    assert sorted(jobs["merge_s2"]["parents"]) == [f"inf_s2_b{b}" for b in range(1, BATCHES + 1)]
    assert sorted(jobs["merge_all"]["parents"]) == ["merge_s1", "merge_s2"]
    for job_id in jobs:
        assert [r["status"] for r in records(run, job_id)] == ["succeeded"], job_id
    # the stageable executable came in with its catalog sha256 checked
    rec = records(run, "wav_s1_b1")[0]
    exe = next(t for t in rec["transfers"] if t["lfn"] == "convert2wav")
    assert exe["expected_sha256"] == exe["sha256"]
    ts_in = next(t for t in rec["transfers"] if t["lfn"].endswith(".ts"))
    assert ts_in["expected_sha256"] == ts_in["sha256"]
    # every intermediate file was cleaned up from staging
    assert not list(files_under(run / "scratch"))
    registered = yaml.safe_load((run / "replicas.out.yml").read_text())["replicas"]
    assert {r["lfn"] for r in registered} == {
        "predictions_all.json", "predictions_sensor_1.json", "predictions_sensor_2.json",
        *(f"png/sensor_{s}/{TS}/batch_{b}.png" for s in (1, 2) for b in (1, 2, 3)),
    }

    # data reuse, second run: one spectrogram is gone from the output site; only it and
    # the conversion it needs run again
    (out / f"png/sensor_1/{TS}/batch_2.png").unlink()
    before = (out / "predictions_all.json").stat().st_mtime_ns
    res = ferry("run", "workflow.yml", "--dir", "run2", "-O", "outputs", "--reuse-output-site",
                cwd=tmp_path)
    ok(res)
    run2 = tmp_path / "run2"
    doc = plan_doc(run2)
    assert sorted(j["id"] for j in doc["jobs"]) == ["png_s1_b2", "wav_s1_b2"]
    assert len(doc["pruned"]) == len(jobs) - 2
    assert (out / f"png/sensor_1/{TS}/batch_2.png").read_text().startswith("PNG WAV hydrophone s1 b2")
    assert (out / "predictions_all.json").stat().st_mtime_ns == before
    assert sorted(p.name.split(".")[0] for p in (run2 / "records").iterdir()) == [
        "png_s1_b2", "wav_s1_b2"
    ]

    # and with the first run's output replica catalog: everything is there
    res = ferry("plan", "workflow.yml", "--dir", "run3", "-O", "outputs",
                "-r", "run1/replicas.out.yml", cwd=tmp_path)
    ok(res)
    assert plan_doc(tmp_path / "run3")["jobs"] == []
    res = ferry("run", "workflow.yml", "--dir", "run4", "-O", "outputs", "-f", "-j", "2",
                cwd=tmp_path)
    ok(res)
    assert len(plan_doc(tmp_path / "run4")["jobs"]) == len(jobs)


# --- a diamond --------------------------------------------------------------------------


def test_diamond_runs_and_resume_reruns_nothing(tmp_path: Path) -> None:
    (tmp_path / "f.a").write_text("abc\n")
    rc = ReplicaCatalog().add_replica("local", "f.a", str(tmp_path / "f.a"))
    wf = Workflow("diamond").add_replica_catalog(rc)
    fa, fb1, fb2, fc1, fc2, fd = (File(n) for n in ("f.a", "f.b1", "f.b2", "f.c1", "f.c2", "f.d"))
    wf.add_jobs(
        Job("sh", _id="pre").add_args("-c", "tr a-z A-Z < f.a > f.b1; cp f.b1 f.b2")
        .add_inputs(fa).add_outputs(fb1, fb2, stage_out=False),
        Job("sh", _id="left").add_args("-c", "sed s/^/L:/ f.b1 > f.c1")
        .add_inputs(fb1).add_outputs(fc1, stage_out=False),
        Job("sh", _id="right").add_args("-c", "sed s/^/R:/ f.b2 > f.c2")
        .add_inputs(fb2).add_outputs(fc2, stage_out=False),
        Job("sh", _id="analyze").add_args("-c", "cat f.c1 f.c2 > f.d")
        .add_inputs(fc1, fc2).add_outputs(fd),
    )
    write(tmp_path, wf)
    ok(ferry("run", "workflow.yml", "--dir", "run", "-O", "outputs", cwd=tmp_path))
    run = tmp_path / "run"
    assert (tmp_path / "outputs" / "f.d").read_text() == "L:ABC\nR:ABC\n"
    starts = [e["t"] for e in journal(run) if e["event"] == "started"]
    assert len(starts) == 4
    # pre before left/right before analyze
    t = {e["job"]: e["t"] for e in journal(run) if e["event"] == "started"}
    s = {e["job"]: e["t"] for e in journal(run) if e["event"] == "succeeded"}
    assert s["pre"] <= min(t["left"], t["right"]) and max(s["left"], s["right"]) <= t["analyze"]

    # a job whose record says succeeded but whose journal line was lost (kill -9 at
    # the wrong moment) is not run again
    lines = (run / "journal.jsonl").read_text().splitlines()
    kept = [
        ln for ln in lines
        if not (json.loads(ln)["job"] == "analyze" and json.loads(ln)["event"] == "succeeded")
        and json.loads(ln)["event"] not in ("workflow-finished", "cleanup")
    ]
    (run / "journal.jsonl").write_text("\n".join(kept) + '\n{"t": 1, "job": "ana')  # torn line
    res = ferry("run", "--resume", str(run), cwd=tmp_path)
    ok(res)
    assert len(records(run, "analyze")) == 1
    rec = events(run, "analyze", "succeeded")
    assert rec and rec[-1].get("recovered") is True
    assert len([e for e in journal(run) if e["event"] == "started"]) == 4
    res = ferry("status", str(run), "--json")
    ok(res)
    st = json.loads(res.stdout)
    assert st["status"] == "success" and st["counts"]["succeeded"] == 4


# --- retries ----------------------------------------------------------------------------


def test_failed_job_is_retried(tmp_path: Path) -> None:
    mark = tmp_path / "mark"
    wf = Workflow("retry")
    wf.add_jobs(
        Job("sh", _id="flaky").add_args(
            "-c", f"if [ -e {mark} ]; then echo fine > out.txt; else touch {mark}; echo boom >&2; exit 3; fi"
        ).add_outputs(File("out.txt"))
    )
    write(tmp_path, wf)
    res = ferry("run", "workflow.yml", "--dir", "run", "-O", "outputs", cwd=tmp_path)
    ok(res)
    run = tmp_path / "run"
    first, second = records(run, "flaky")
    assert (first["attempt"], first["status"], first["exit_code"], first["failed_step"]) == (
        1, "failed", 3, "run"
    )
    assert "boom" in first["stderr_tail"]
    assert (second["attempt"], second["status"]) == (2, "succeeded")
    assert [e["event"] for e in journal(run) if e["job"] == "flaky"] == [
        "queued", "started", "failed", "retry", "started", "succeeded"
    ]
    assert (tmp_path / "outputs" / "out.txt").read_text() == "fine\n"
    res = ferry("statistics", str(run))
    ok(res)
    assert "Tasks          1         0       0           1         1         2" in res.stdout
    assert "Jobs           1         0       0           1         1         2" in res.stdout
    assert (run / "statistics" / "summary.txt").exists()


def test_dagman_retry_profile_and_no_retries(tmp_path: Path) -> None:
    wf = Workflow("retry2")
    wf.add_jobs(Job("false", _id="never").add_dagman_profile(retry=2), Job("false", _id="once"))
    write(tmp_path, wf)
    res = ferry("run", "workflow.yml", "--dir", "run", "--retries", "0", cwd=tmp_path)
    assert res.returncode == 1
    run = tmp_path / "run"
    assert len(records(run, "never")) == 3 and len(records(run, "once")) == 1


# --- failures and the monitoring commands -------------------------------------------------


def test_failures_status_statistics_analyze(tmp_path: Path, nginx_server) -> None:  # type: ignore[no-untyped-def]
    rc = ReplicaCatalog().add_replica("web", "missing.dat", f"{nginx_server.url}/no/such/file.dat")
    wf = Workflow("broken").add_replica_catalog(rc)
    wf.add_jobs(
        Job("sh", _id="good").add_args("-c", "echo ok > good.txt").add_outputs(File("good.txt")),
        Job("sh", _id="bad").add_args("-c", "echo partial > mid.txt; echo oops-on-stderr >&2; exit 7")
        .add_outputs(File("mid.txt"), stage_out=False),
        Job("cat", _id="child").add_args("mid.txt").add_inputs(File("mid.txt")),
        Job("cat", _id="fetch").add_args("missing.dat").add_inputs(File("missing.dat")),
    )
    write(tmp_path, wf)
    res = ferry("run", "workflow.yml", "--dir", "run", "--retries", "0", "-O", "out", cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    assert "Workflow failed: 2 job(s) failed" in res.stdout
    assert "job bad FAILED (attempt 1, exit 1)" in res.stdout
    run = tmp_path / "run"

    res = ferry("status", str(run), "--json")
    assert res.returncode == 1
    st = json.loads(res.stdout)
    assert st["status"] == "failure"
    assert st["counts"]["succeeded"] == 1 and st["counts"]["failed"] == 2
    assert st["counts"]["unready"] == 1  # child never ran
    assert sorted(f["id"] for f in st["failed"]) == ["bad", "fetch"]
    res = ferry("status", str(run))
    assert "Workflow broken: failure" in res.stdout and "Failed:" in res.stdout

    res = ferry("statistics", str(run))
    ok(res)
    lines = res.stdout.splitlines()
    assert lines[0] == "-" * 78
    assert lines[1] == "Type           Succeeded Failed  Incomplete  Total     Retries   Total+Retries"
    assert lines[2].rstrip() == "Tasks          1         2       1           4         0         3"
    assert lines[3].rstrip() == "Jobs           1         2       1           4         0         3"
    assert lines[4].rstrip() == "Sub-Workflows  0         0       0           0         0         0"
    assert lines[7].startswith("Workflow wall time                                       : ")
    assert any(ln.startswith("Cumulative job badput wall time as seen from submit side : ") for ln in lines)
    st = json.loads(ferry("statistics", str(run), "--json").stdout)
    assert st["tasks"]["failed"] == 2 and st["badput_submit"] > 0

    res = ferry("analyze", str(run))
    assert res.returncode == 2
    text = res.stdout
    assert "Workflow Status    : failure" in text
    assert "# jobs failed      :      2 (50.00%)" in text
    bad = text.split("=bad=")[1].split("=fetch=")[0]
    assert "exit code: 7" in bad and "failed step: run" in bad
    assert "oops-on-stderr" in bad
    assert f"record: {run}/records/bad.1.json" in bad
    fetch = text.split("=fetch=")[1]
    assert "failed step: stage-in" in fetch
    assert "transfer: input missing.dat:" in fetch and "404" in fetch
    data = json.loads(ferry("analyze", str(run), "--json").stdout)
    by_job = {f["job"]: f for f in data["failed"]}
    assert by_job["bad"]["exit_code"] == 7 and by_job["bad"]["worker_exit_code"] == 1
    assert by_job["fetch"]["worker_exit_code"] == 3
    assert by_job["fetch"]["transfer_errors"][0]["lfn"] == "missing.dat"


# --- cleanup modes -------------------------------------------------------------------------


def chain_wf() -> Workflow:
    wf = Workflow("chain")
    wf.add_jobs(
        Job("sh", _id="a").add_args("-c", "echo 1 > a.out").add_outputs(File("a.out"), stage_out=False),
        Job("sh", _id="b").add_args("-c", "cat a.out > b.out; echo 2 >> b.out")
        .add_inputs(File("a.out")).add_outputs(File("b.out"), stage_out=False),
        Job("sh", _id="c").add_args("-c", "cat b.out > c.out").add_inputs(File("b.out"))
        .add_outputs(File("c.out")),
    )
    return wf


def test_cleanup_modes(tmp_path: Path) -> None:
    write(tmp_path, chain_wf())
    for mode in ("none", "leaf", "inplace"):
        ok(ferry("run", "workflow.yml", "--dir", mode, "--cleanup", mode, "-O", "out", "-f",
                 cwd=tmp_path))
        left = sorted(p.name for p in files_under(tmp_path / mode / "scratch"))
        cleanups = [e for e in journal(tmp_path / mode) if e["event"] == "cleanup"]
        if mode == "none":
            assert left == ["a.out", "b.out"] and cleanups == []
        elif mode == "leaf":
            assert left == [] and [c["action"] for c in cleanups] == ["cleanup_leaf"]
        else:
            assert left == [] and len(cleanups) == 2
            # a.out went as soon as b (its last reader) succeeded: before c started
            ev = journal(tmp_path / mode)
            first = next(i for i, e in enumerate(ev) if e["event"] == "cleanup")
            c_start = next(i for i, e in enumerate(ev) if e["job"] == "c" and e["event"] == "started")
            assert first < c_start
        assert (tmp_path / "out" / "c.out").read_text() == "1\n2\n"


# --- clustering -------------------------------------------------------------------------------


def test_clustered_jobs_run_in_one_worker_each_with_a_record(tmp_path: Path) -> None:
    tc = TransformationCatalog().add_transformations(
        Transformation("part", site="local", pfn="/bin/sh").add_pegasus_profile(clusters_size=3),
        Transformation("merge", site="local", pfn="/bin/sh"),
    )
    wf = Workflow("clustered").add_transformation_catalog(tc)
    parts = []
    for i in range(6):
        f = File(f"part{i}")
        wf.add_jobs(Job("part", _id=f"p{i}").add_args("-c", f"echo {i} > part{i}; echo $$ > pid{i}")
                    .add_outputs(f, stage_out=False).add_outputs(File(f"pid{i}")))
        parts.append(f)
    wf.add_jobs(Job("merge", _id="m").add_args("-c", "cat " + " ".join(f"part{i}" for i in range(6)) + " > all")
                .add_inputs(*parts).add_outputs(File("all")))
    write(tmp_path, wf)
    res = ferry("run", "workflow.yml", "--dir", "run", "-O", "out", cwd=tmp_path)
    ok(res)
    run = tmp_path / "run"
    assert (tmp_path / "out" / "all").read_text() == "".join(f"{i}\n" for i in range(6))
    doc = plan_doc(run)
    clusters = [j for j in doc["jobs"] if j.get("members")]
    assert [c["members"] for c in clusters] == [["p0", "p1", "p2"], ["p3", "p4", "p5"]]
    for i in range(6):
        (rec,) = records(run, f"p{i}")
        assert rec["status"] == "succeeded"
    started = [e["job"] for e in journal(run) if e["event"] == "started"]
    assert sorted(started) == sorted([c["id"] for c in clusters] + ["m"])
    st = json.loads(ferry("statistics", str(run), "--json").stdout)
    assert st["tasks"]["succeeded"] == 7 and st["jobs"]["succeeded"] == 3


# --- ferry remove, checkpoints, resume -------------------------------------------------------

LONG = """\
import os, signal, sys, time
if os.path.exists("state.ckpt"):
    open("result.txt", "w").write("resumed from " + open("state.ckpt").read())
    sys.exit(0)
def term(*_):
    open("state.ckpt", "w").write("step 42")
    sys.exit(1)
signal.signal(signal.SIGTERM, term)
open(os.environ["STARTED"], "w").write("x")
time.sleep(120)
"""


def test_remove_stops_cleanly_and_resume_continues_from_the_checkpoint(tmp_path: Path) -> None:
    started = tmp_path / "started"
    long_ = script(tmp_path / "long.py", LONG)
    tc = TransformationCatalog().add_transformations(
        Transformation("long", site="local", pfn=str(long_)),
        Transformation("cat", site="local", pfn="/bin/cat"),
    )
    wf = Workflow("removal").add_transformation_catalog(tc)
    wf.add_jobs(
        Job("long", _id="long1").add_env(STARTED=str(started))
        .add_checkpoint(File("state.ckpt"), stage_out=False).add_outputs(File("result.txt")),
        Job("cat", _id="after").add_args("result.txt").add_inputs(File("result.txt"))
        .set_stdout(File("copy.txt")),
    )
    write(tmp_path, wf)
    proc = ferry_bg("run", "workflow.yml", "--dir", "run", "-O", "out", cwd=tmp_path)
    run = tmp_path / "run"
    try:
        wait_for(started.exists, 60, "the long job to start")
        assert (run / "run.pid").read_text().split()[0] == str(proc.pid)
        res = ferry("status", str(run), "--json")
        st = json.loads(res.stdout)
        assert st["status"] == "running" and [r["id"] for r in st["running"]] == ["long1"]
        res = ferry("remove", str(run))
        ok(res)
        assert proc.wait(30) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (run / "run.pid").exists()
    assert [e["event"] for e in journal(run) if e["job"] == "long1"][-1] == "removed"
    assert journal(run)[-1]["status"] == "removed"
    (rec,) = records(run, "long1")
    assert rec["evicted"] and rec["worker_exit_code"] == 143
    ckpt = run / "scratch" / ".checkpoints" / "long1" / "state.ckpt"
    assert ckpt.read_text() == "step 42"
    res = ferry("status", str(run), "--json")
    assert json.loads(res.stdout)["status"] == "removed"
    res = ferry("remove", str(run))
    assert res.returncode == 1 and "no ferry run is running" in res.stderr

    # the continuation restores the checkpoint; the dependent job then runs
    ok(ferry("run", "--resume", str(run), cwd=tmp_path))
    assert (tmp_path / "out" / "result.txt").read_text() == "resumed from step 42"
    assert [r["status"] for r in records(run, "long1")] == ["failed", "succeeded"]
    assert records(run, "after")[-1]["status"] == "succeeded"
    assert (tmp_path / "out" / "copy.txt").read_text() == "resumed from step 42"


def test_resume_after_kill_9_reruns_nothing_that_succeeded(tmp_path: Path) -> None:
    mark = tmp_path / "slow-mark"
    wf = Workflow("killed")
    for i in range(4):
        wf.add_jobs(Job("sh", _id=f"q{i}").add_args("-c", f"echo {i} > q{i}.out").add_outputs(File(f"q{i}.out")))
    wf.add_jobs(
        Job("sh", _id="slow").add_args(
            "-c", f"if [ -e {mark} ]; then echo s > slow.out; else touch {mark}; sleep 60; fi"
        ).add_outputs(File("slow.out"), stage_out=False),
        Job("sh", _id="after").add_args("-c", "cat slow.out > after.out")
        .add_inputs(File("slow.out")).add_outputs(File("after.out")),
    )
    write(tmp_path, wf)
    proc = ferry_bg("run", "workflow.yml", "--dir", "run", "-O", "out", "-j", "5", cwd=tmp_path)
    run = tmp_path / "run"
    try:
        def progressed() -> bool:
            ev = journal(run) if (run / "journal.jsonl").exists() else []
            done = {e["job"] for e in ev if e["event"] == "succeeded"}
            return {"q0", "q1", "q2", "q3"} <= done and mark.exists()

        wait_for(progressed, 60, "the quick jobs to finish and the slow one to start")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    # the zygote saw its runner vanish and stopped the slow job; its record says so
    wait_for(lambda: bool(records(run, "slow")), 30, "the slow job's record")
    assert records(run, "slow")[0]["status"] == "failed"
    assert (run / "run.pid").exists()  # left behind by the killed runner: must not block

    res = ferry("status", str(run), "--json")
    assert json.loads(res.stdout)["status"] == "stopped"
    t0 = time.time()
    res = ferry("run", "--resume", str(run), cwd=tmp_path)
    ok(res)
    assert time.time() - t0 < 50
    for i in range(4):
        assert len(records(run, f"q{i}")) == 1
        assert len(events(run, f"q{i}", "started")) == 1
    assert [r["status"] for r in records(run, "slow")] == ["failed", "succeeded"]
    assert (tmp_path / "out" / "after.out").read_text() == "s\n"
    # a second resume has nothing to do
    ok(ferry("run", "--resume", str(run), cwd=tmp_path))
    assert len([e for e in journal(run) if e["event"] == "started"]) == 7
    assert PY  # the helpers' interpreter ran everything


def test_packed_specs_fresh_process_per_job_and_work_dir(tmp_path: Path) -> None:
    tc = TransformationCatalog().add_transformations(
        Transformation("part", site="local", pfn="/bin/sh").add_pegasus_profile(clusters_num=2),
        Transformation("merge", site="local", pfn="/bin/sh"),
    )
    wf = Workflow("packed").add_transformation_catalog(tc)
    parts = []
    for i in range(5):
        f = File(f"part{i}")
        wf.add_jobs(Job("part", _id=f"p{i}").add_args("-c", f"echo {i} > part{i}; echo $PPID > who{i}")
                    .add_outputs(f, stage_out=False).add_outputs(File(f"who{i}")))
        parts.append(f)
    wf.add_jobs(Job("merge", _id="m").add_args("-c", "cat " + " ".join(f"part{i}" for i in range(5)) + " > all")
                .add_inputs(*parts).add_outputs(File("all")))
    write(tmp_path, wf)
    work = tmp_path / "elsewhere"
    res = ferry("run", "workflow.yml", "--dir", "run", "-O", "out", "--spec-layout", "packed",
                "--jobs-per-process", "1", "--work-dir", str(work), cwd=tmp_path)
    ok(res)
    run = tmp_path / "run"
    doc = plan_doc(run)
    assert doc["options"]["spec_layout"] == "packed"
    assert all("@" in j["spec"] and j["spec"].startswith("jobs/0000.jsonl@") for j in doc["jobs"])
    assert sorted(p.name for p in (run / "jobs").iterdir()) == ["0000.jsonl"]
    # every packed line is a valid spec or cluster
    from ferry.planner.rundir import read_ref
    from ferry.worker.jobspec import load_jobspec

    cl = next(j for j in doc["jobs"] if j.get("members"))
    members = json.loads(read_ref(str(run / cl["spec"])))["members"]
    assert [load_jobspec(read_ref(str(run / m))).id for m in members] == cl["members"]
    assert (tmp_path / "out" / "all").read_text() == "".join(f"{i}\n" for i in range(5))
    for i in range(5):
        assert records(run, f"p{i}")[0]["workdir"].startswith(str(work))
    assert work.is_dir() and not any(work.iterdir())  # work directories removed


def test_a_worker_process_killed_mid_job_is_a_failed_attempt(tmp_path: Path) -> None:
    mark = tmp_path / "mark"
    wf = Workflow("crash")
    wf.add_jobs(
        Job("sh", _id="victim").add_args(
            "-c", f"if [ -e {mark} ]; then echo ok > o.txt; else touch {mark}; kill -9 $PPID; sleep 2; fi"
        ).add_outputs(File("o.txt")),
        Job("sh", _id="bystander").add_args("-c", "echo fine > b.txt").add_outputs(File("b.txt")),
    )
    write(tmp_path, wf)
    res = ferry("run", "workflow.yml", "--dir", "run", "-O", "out", cwd=tmp_path)
    ok(res)
    run = tmp_path / "run"
    assert [e.get("exit") for e in events(run, "victim", "failed")] == [-9]
    assert [r["attempt"] for r in records(run, "victim")] == [2]  # attempt 1 died with its worker
    assert (tmp_path / "out" / "o.txt").read_text() == "ok\n"
    assert (tmp_path / "out" / "b.txt").read_text() == "fine\n"
