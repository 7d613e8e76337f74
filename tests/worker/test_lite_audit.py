"""`ferry worker` against what pegasus-lite does for a job (reference/pegasus-lite.md):
eviction at any step, paths and patterns checked before anything runs, inputs and
credentials a container can see, the slot's GPUs, containers named and removed after
a kill, Pegasus image references, checkpoints (checkpoint.time, wrappers, failed
stage-out), what a job leaves running, and Pegasus workflows end to end.

charliecloud really runs here. docker and apptainer cannot: their tests put a
*stand-in* executable first on PATH that records its command line and environment
and runs the job on the host in the work directory, as the real runtime would in
the container (the only stand-ins in this file; they say so where they are used).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.containers.images import build_busybox_archive
from tests.planner.helpers import ferry, records
from tests.servers import FaultServer
from tests.worker.test_worker import record, sha, workdirs, worker, write_spec

# -- stand-in runtimes -----------------------------------------------------------------

#: runs "exec [OPTIONS] IMAGE ARGV..." (apptainer) or "run [OPTIONS] IMAGE ARGS..."
#: (docker) on the host, in the directory bound at /srv; "load", "image inspect" and
#: "rm" act on a state directory beside it, where every call is logged (calls.jsonl).
STANDIN = r"""#!{python}
import json, os, sys, tarfile
args = sys.argv[1:]
# beside the stand-in's own directory: runtimes get a filtered environment
state = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(sys.argv[0]))), "standin-state")
with open(os.path.join(state, "calls.jsonl"), "a") as f:
    f.write(json.dumps({{"prog": os.path.basename(sys.argv[0]), "argv": args,
                         "env": dict(os.environ)}}) + "\n")
mark = lambda ref: os.path.join(state, ref.replace(":", "_").replace("/", "_"))
if args[:1] == ["--version"]:
    sys.exit(0)
if args[:2] == ["image", "inspect"]:
    sys.exit(0 if os.path.exists(mark(args[-1])) else 1)
if args[:1] == ["load"]:
    with tarfile.open(args[2]) as t:
        config = json.load(t.extractfile("manifest.json"))[0]["Config"]
    ref = "sha256:" + config.split("/")[-1].replace(".json", "")
    open(mark(ref), "w").close()
    print("Loaded image ID: " + ref)
    sys.exit(0)
if args[:1] == ["rm"]:
    sys.exit(0)
takes_value = {{"-v", "-w", "--user", "--name", "-e", "--entrypoint", "--bind", "--home",
               "--pwd", "--gpus", "--device", "--group-add", "--security-opt"}}
i, srv, entry, env = 1, None, None, {{}}
while args[i].startswith("-"):
    opt, value = args[i], args[i + 1] if args[i] in takes_value else None
    if opt in ("-v", "--bind") and value.endswith(":/srv"):
        srv = value[: -len(":/srv")]
    if opt == "-e":
        name, eq, val = value.partition("=")
        env[name] = val if eq else os.environ[name]
    if opt == "--entrypoint":
        entry = value
    i += 2 if value is not None else 1
argv = [entry, *args[i + 1:]] if entry else args[i + 1:]
env.update({{k[len("APPTAINERENV_"):]: v for k, v in os.environ.items()
            if k.startswith("APPTAINERENV_")}})
env.setdefault("PATH", "/usr/bin:/bin")
if argv[0].startswith("/srv/"):
    argv[0] = srv + argv[0][len("/srv"):]
os.chdir(srv)
os.execvpe(argv[0], argv, env)
"""


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A stand-in ``docker`` and ``apptainer`` first on PATH (neither can run here);
    yields the environment for the worker. ``calls(env)`` reads what they were asked."""
    bindir, state = tmp_path / "standin-bin", tmp_path / "standin-state"
    bindir.mkdir()
    state.mkdir()
    for name in ("docker", "apptainer"):
        path = bindir / name
        path.write_text(STANDIN.format(python=sys.executable))
        path.chmod(0o755)
    yield {
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "STANDIN_STATE": str(state),
        "FERRY_IMAGE_CACHE": str(tmp_path / "cache"),
    }


def calls(env: dict[str, str], prog: str) -> list[dict[str, Any]]:
    lines = (Path(env["STANDIN_STATE"]) / "calls.jsonl").read_text().splitlines()
    return [c for c in map(json.loads, lines) if c["prog"] == prog]


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


# -- eviction before the job started ---------------------------------------------------------


def term_during_stage_in(spec: Path, tmp_path: Path) -> tuple[int, str, float]:
    """Run the worker on ``spec``, send it TERM 0.5 s after its work directory appears;
    its exit code, stderr, and the seconds it took to end after the TERM."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ferry.worker", str(spec)],
        env={**os.environ, "FERRY_WORK_DIR": str(tmp_path)},
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not workdirs(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err, time.monotonic() - t0


def test_term_during_stage_in_is_recorded_and_the_job_never_starts(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    """HTCondor evicts a job while its inputs are still arriving: the worker exits 143
    without starting the job, and its record says it was evicted and in which step
    (it used to say neither: evicted false, no failure, no failed step)."""
    fault_server.add("/lite-audit/slow.dat", b"x" * 1000, delay=3)
    spec = write_spec(
        tmp_path,
        arguments=["-c", f"touch {tmp_path}/ran"],
        inputs=[
            {"lfn": "slow.dat", "sources": [{"url": f"{fault_server.url}/lite-audit/slow.dat"}]}
        ],
    )
    code, err, _ = term_during_stage_in(spec, tmp_path)  # inside the 3 s the server takes
    assert code == 143, err
    assert not (tmp_path / "ran").exists()
    rec = record(tmp_path)
    assert rec["evicted"] and rec["status"] == "failed" and rec["failed_step"] == "stage-in"
    assert "TERM" in rec["failures"][0]["reason"] and rec["exit_code"] is None
    assert "run" not in rec["phases"]
    assert "stage-in" in err and "TERM" in err


def test_term_during_stage_in_starts_no_further_inputs(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    """Inputs still queued when the TERM comes are not fetched: the worker ends once the
    transfer running ends, not after every input (six inputs of 1.5 s, one at a time)."""
    inputs = []
    for i in range(6):
        fault_server.add(f"/lite-audit/queued-{i}.dat", b"x" * 100, delay=1.5)
        url = f"{fault_server.url}/lite-audit/queued-{i}.dat"
        inputs.append({"lfn": f"q{i}.dat", "sources": [{"url": url}]})
    spec = write_spec(tmp_path, arguments=["-c", "true"], inputs=inputs,
                      transfer={"threads": 1, "max_attempts": 1, "backoff": 0.1})  # fmt: skip
    code, err, after_term = term_during_stage_in(spec, tmp_path)
    assert code == 143, err
    assert after_term < 4.0  # the five inputs left would take 7.5 s more
    requested = sum(fault_server.routes[f"/lite-audit/queued-{i}.dat"].count for i in range(6))
    assert requested <= 2
    rec = record(tmp_path)
    assert rec["evicted"] and rec["failed_step"] == "stage-in"
    assert [f["step"] for f in rec["failures"]] == ["stage-in"]  # no "cancelled" inputs


# -- what the job spec must say before anything runs -----------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("stdout", "../escaped.txt"), ("stderr", "{tmp}/escaped.txt"), ("stdin", "../in")],
)
def test_stdio_files_must_be_in_the_work_directory(tmp_path: Path, field: str, value: str) -> None:
    """stdin/stdout/stderr are files in the work directory (docs/jobspec.md); one that
    leaves it is refused like an input's path, before anything runs (stdout used to be
    written wherever it pointed)."""
    value = value.format(tmp=tmp_path)
    spec = write_spec(tmp_path, executable="/bin/echo", arguments=["x"], **{field: value})
    p = worker(spec)
    assert p.returncode == 2 and f"$.{field}" in p.stderr and value in p.stderr
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path.parent / "escaped.txt").exists()
    assert workdirs(tmp_path) == []


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"success": {"stdout_must": ["(unclosed"]}}, "$.success.stdout_must[0]"),
        ({"success": {"stderr_must_not": ["ok", "[z-a]"]}}, "$.success.stderr_must_not[1]"),
        ({"checkpoint_interval": -1}, "$.checkpoint_interval"),
        ({"kill_grace": -5}, "$.kill_grace"),
    ],
)
def test_bad_checks_are_refused_before_the_job_runs(
    tmp_path: Path, fields: dict[str, Any], where: str
) -> None:
    """A success pattern that is no regular expression used to be found only after the
    job had run (a worker error with a traceback, its outputs lost)."""
    spec = write_spec(tmp_path, arguments=["-c", f"touch {tmp_path}/ran"], **fields)
    p = worker(spec)
    assert p.returncode == 2 and where in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "ran").exists()


# -- containers ------------------------------------------------------------------------------


@pytest.fixture
def busybox(tmp_path: Path) -> Path:
    return build_busybox_archive(tmp_path / "busybox.tar").path


@pytest.fixture
def outside_tmp() -> Iterator[Path]:
    """A directory outside /tmp and $HOME, which ch-run binds into every container."""
    path = Path(tempfile.mkdtemp(prefix="ferry-lite-audit-", dir="/var/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.container
def test_a_symlinked_input_is_copied_for_a_container_job(
    tmp_path: Path, busybox: Path, outside_tmp: Path
) -> None:
    """Inputs marked ``symlink`` (HTCondor's sandbox files) would be links to host paths
    that a container does not bind: pegasus-lite does not --symlink for such jobs, and
    the worker copies them (the job used to find a dangling link)."""
    data = b"linked input\n" * 10
    (outside_tmp / "src.txt").write_bytes(data)
    spec = write_spec(
        tmp_path,
        arguments=[
            "-c",
            "if [ -L in.txt ]; then echo link; else echo copy; fi; cat in.txt > out.txt",
        ],
        inputs=[
            {
                "lfn": "in.txt",
                "symlink": True,
                "sha256": sha(data),
                "sources": [{"url": f"file://{outside_tmp}/src.txt"}],
            }
        ],
        outputs=[{"lfn": "out.txt", "destinations": [{"url": f"file://{tmp_path}/res/out.txt"}]}],
        container={"image": f"file://{busybox}", "runtime": "charliecloud"},
    )
    p = worker(spec, env={"FERRY_IMAGE_CACHE": str(tmp_path / "cache")})
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "res" / "out.txt").read_bytes() == data
    rec = record(tmp_path)
    assert rec["stdout_tail"] == "copy\n"
    [inp] = [t for t in rec["transfers"] if t["direction"] == "input"]
    assert inp["route"] != "symlink" and inp["sha256"] == f"sha256:{sha(data)}"


@pytest.mark.container
def test_the_slots_gpus_are_visible_in_the_container(tmp_path: Path, busybox: Path) -> None:
    """The container's environment is clean, but the devices the batch slot assigned
    (CUDA_VISIBLE_DEVICES, ... as HTCondor sets them) must reach the job, or it sees
    and may use every GPU of the node (docs/containers.md, GPUs). The job spec's own
    value wins; nothing else from the host gets in."""
    spec = write_spec(
        tmp_path,
        arguments=[
            "-c",
            'echo "cuda=$CUDA_VISIBLE_DEVICES rocr=$ROCR_VISIBLE_DEVICES x=$HOST_ONLY"',
        ],
        environment={"ROCR_VISIBLE_DEVICES": "from-spec"},
        resources={"gpus": 1},
        container={"image": f"file://{busybox}", "runtime": "charliecloud"},
    )
    env = {
        "FERRY_IMAGE_CACHE": str(tmp_path / "cache"),
        "CUDA_VISIBLE_DEVICES": "GPU-5c6d",
        "ROCR_VISIBLE_DEVICES": "host",
        "HOST_ONLY": "leak",
    }
    p = worker(spec, env=env)
    assert p.returncode == 0, p.stderr
    assert record(tmp_path)["stdout_tail"] == "cuda=GPU-5c6d rocr=from-spec x=\n"


def test_docker_container_name_is_valid_and_unique_whatever_the_job_id(
    tmp_path: Path, busybox: Path, standin: dict[str, str]
) -> None:
    """Stand-in docker (no daemon here). Job ids repeat across workflows (ID0000001) and
    may hold characters docker refuses in a name; the container name used to be
    ``ferry-<id>-<attempt>``: a worker error for ``wf::job@1``, and a name clash between
    two workflows' jobs on one node."""
    spec = write_spec(
        tmp_path,
        id="wf::job@1",
        arguments=["-c", "echo ran > out.txt"],
        outputs=[{"lfn": "out.txt", "destinations": [{"url": f"file://{tmp_path}/out.txt"}]}],
        container={"image": f"file://{busybox}", "runtime": "docker"},
    )
    names = []
    for attempt in (1, 2):
        p = worker(spec, env=standin)
        assert p.returncode == 0, p.stderr
        assert (tmp_path / "out.txt").read_text() == "ran\n"
        rec = json.loads((tmp_path / f"wf::job@1.{attempt}.json").read_text())
        assert rec["status"] == "succeeded" and rec["container"]["runtime"] == "docker"
        [run] = [c["argv"] for c in calls(standin, "docker") if c["argv"][0] == "run"][-1:]
        names.append(option(run, "--name"))
        assert Path(rec["workdir"]).name in names[-1]
    assert names[0] != names[1]
    assert all(n.startswith("ferry-wf__job_1-") for n in names)


def test_a_killed_docker_client_has_its_container_removed(
    tmp_path: Path, busybox: Path, standin: dict[str, str]
) -> None:
    """Stand-in docker. A job that ignores TERM at its timeout gets its ``docker run``
    client KILLed, which leaves the container running; pegasus-lite runs
    ``docker rm --force NAME`` after its job, and so must the worker then."""
    spec = write_spec(
        tmp_path,
        arguments=["-c", "trap '' TERM; sleep 30"],
        timeout=1,
        kill_grace=1,
        container={"image": f"file://{busybox}", "runtime": "docker"},
    )
    t0 = time.monotonic()
    p = worker(spec, env=standin)
    assert p.returncode == 1 and time.monotonic() - t0 < 20, p.stderr
    rec = record(tmp_path)
    assert rec["timed_out"] and rec["signal"] == signal.SIGKILL
    docker = [c["argv"] for c in calls(standin, "docker")]
    [run] = [a for a in docker if a[0] == "run"]
    assert docker[-1] == ["rm", "--force", option(run, "--name")]


def test_docker_job_that_ends_normally_is_not_removed_twice(
    tmp_path: Path, busybox: Path, standin: dict[str, str]
) -> None:
    """Stand-in docker: ``run --rm`` removes a container that exits by itself."""
    spec = write_spec(
        tmp_path,
        arguments=["-c", "exit 3"],
        container={"image": f"file://{busybox}", "runtime": "docker"},
    )
    assert worker(spec, env=standin).returncode == 1
    assert record(tmp_path)["exit_code"] == 3
    assert not [c for c in calls(standin, "docker") if c["argv"][0] == "rm"]


def test_wrong_sif_sum_records_both_sums_and_caches_nothing(
    tmp_path: Path, standin: dict[str, str]
) -> None:
    """Stand-in apptainer (never reached). A ``.sif`` whose bytes do not have the
    catalog's sha256 fails the container step before the job runs; the failure carries
    the expected and the actual sum, as an input's does."""
    image = tmp_path / "tool.sif"
    image.write_bytes(os.urandom(4096))
    wrong = "ab" * 32
    spec = write_spec(
        tmp_path,
        arguments=["-c", f"touch {tmp_path}/ran"],
        container={"image": f"file://{image}", "sha256": wrong},
    )
    p = worker(spec, env=standin)
    assert p.returncode == 6, p.stderr
    rec = record(tmp_path)
    assert rec["failed_step"] == "container"
    [f] = rec["failures"]
    assert f["expected"] == wrong and f["actual"] == sha(image.read_bytes())
    assert not (tmp_path / "ran").exists()
    assert not list((tmp_path / "cache" / "blobs").iterdir())
    assert not (Path(standin["STANDIN_STATE"]) / "calls.jsonl").exists()


# -- a Pegasus workflow: checkpoint.time, TERM, the checkpoint and the retry -------------------

CKPT_JOB = """#!/bin/sh
if [ -f state.ckpt ]; then echo "resumed from $(cat state.ckpt)" > result.txt; exit 0; fi
trap 'echo 42 > state.ckpt; exit 3' TERM
while :; do sleep 0.1; done
"""


def test_checkpoint_time_terms_the_job_and_the_retry_resumes(tmp_path: Path) -> None:
    """pegasus.checkpoint.time: kickstart's -k: the task gets TERM then, writes its
    checkpoint and fails; the checkpoint is staged out; the retry (dagman.retry) stages
    it in and finishes from it. maxwalltime gives the KILL half the rest later (-K)."""
    from Pegasus.api import File, Job, Transformation, TransformationCatalog, Workflow

    exe = tmp_path / "ck.sh"
    exe.write_text(CKPT_JOB)
    exe.chmod(0o755)
    tx = Transformation("ck", site="local", pfn=str(exe), is_stageable=True)
    job = Job(tx, _id="ck1").add_checkpoint(File("state.ckpt")).add_outputs(File("result.txt"))
    job.add_pegasus_profile(checkpoint_time=0.05, max_walltime=1)  # TERM at 3 s
    job.add_dagman_profile(retry=1)
    wf = Workflow("ckwf").add_jobs(job)
    wf.add_transformation_catalog(TransformationCatalog().add_transformations(tx))
    wf.write(str(tmp_path / "wf.yml"))
    run = tmp_path / "run"
    res = ferry("run", "wf.yml", "-d", str(run), "-O", "out", "-j", "1", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "out" / "result.txt").read_text() == "resumed from 42\n"
    first, second = records(run, "ck1")
    assert first["timed_out"] and first["exit_code"] == 3 and first["failed_step"] == "run"
    assert 2.5 < first["job_wall_time"] < 20
    assert [t["direction"] for t in first["transfers"] if t["lfn"] == "state.ckpt"] == [
        "checkpoint-out"
    ]
    assert second["status"] == "succeeded"
    assert any(t["direction"] == "checkpoint-in" and t["ok"] for t in second["transfers"])


def test_a_job_id_that_cannot_name_a_record_is_refused_before_the_job_runs(
    tmp_path: Path,
) -> None:
    """The record is ``<id>.<attempt>.json``: an id with a '/' used to run the job and
    stage its outputs out, then fail to write the record (exit 2 after the fact)."""
    spec = write_spec(
        tmp_path,
        id="sub/job",
        arguments=["-c", "echo x > o"],
        outputs=[{"lfn": "o", "destinations": [{"url": f"file://{tmp_path}/o-out"}]}],
    )
    p = worker(spec)
    assert p.returncode == 2 and "$.id" in p.stderr and "sub/job" in p.stderr
    assert not (tmp_path / "o-out").exists() and workdirs(tmp_path) == []


def test_a_singularity_sandbox_directory_named_like_a_sif_runs_in_place(
    tmp_path: Path, standin: dict[str, str]
) -> None:
    """Stand-in apptainer. Pegasus lets a singularity image without a suffix be an
    unpacked directory, e.g. ``/cvmfs/.../osgvo-el8:latest`` (PM-1313); the planner, when
    it cannot see the path, calls it ``sif``. On the node it is a directory: used in
    place, not copied, not refused as "not a file"."""
    sandbox = tmp_path / "osgvo-el8:latest"
    (sandbox / "srv").mkdir(parents=True)
    spec = write_spec(
        tmp_path,
        arguments=["-c", "echo in-sandbox > o.txt"],
        outputs=[{"lfn": "o.txt", "destinations": [{"url": f"file://{tmp_path}/o.txt"}]}],
        container={"image": f"file://{sandbox}", "kind": "sif", "runtime": "apptainer"},
    )
    p = worker(spec, env=standin)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "o.txt").read_text() == "in-sandbox\n"
    rec = record(tmp_path)
    assert rec["container"]["kind"] == "dir" and rec["container"]["linked"]
    assert rec["container"]["path"] == str(sandbox)
    [run] = [c["argv"] for c in calls(standin, "apptainer")]
    assert run[0] == "exec" and str(sandbox) in run
    assert not any(t["direction"] == "image" for t in rec["transfers"])


@pytest.mark.parametrize(
    ("runtime", "expected"),
    [
        ("docker", "ryan/centos-pegasus:latest"),
        ("apptainer", "docker://ryan/centos-pegasus:latest"),
    ],
)
def test_pegasus_style_docker_reference_with_three_slashes(
    tmp_path: Path, standin: dict[str, str], runtime: str, expected: str
) -> None:
    """Stand-in docker/apptainer (no registry here either). Pegasus examples write
    ``docker:///user/image:tag``, and pegasus-transfer strips ``^docker:/+`` before it
    pulls; docker used to be handed ``/ryan/centos-pegasus:latest``, an invalid
    reference."""
    spec = write_spec(
        tmp_path,
        arguments=["-c", "echo pulled"],
        container={"image": "docker:///ryan/centos-pegasus:latest", "runtime": runtime},
    )
    p = worker(spec, env=standin)
    assert p.returncode == 0, p.stderr
    assert record(tmp_path)["stdout_tail"] == "pulled\n"
    [run] = [c["argv"] for c in calls(standin, runtime)]
    assert expected in run and not any(a.startswith("/ryan") for a in run)


# -- credentials, as pegasus_lite_init and container_env hand them to the job -----------------


def test_a_relative_credential_path_reaches_the_job_as_an_absolute_one(tmp_path: Path) -> None:
    """HTCondor brings the proxy into the sandbox, where the worker starts; the job runs
    in a work directory below it, so ``X509_USER_PROXY=x509up`` must become absolute
    (pegasus_lite_init does this for every credential variable), and a path that does
    not exist on the node is looked for by its name in the sandbox."""
    (tmp_path / "x509up").write_text("proxy-bytes\n")
    (tmp_path / "s3.cfg").write_text("s3-config\n")
    spec = write_spec(tmp_path, arguments=["-c", 'cat "$X509_USER_PROXY" "$S3CFG"'])
    p = subprocess.run(
        [sys.executable, "-m", "ferry.worker", str(spec)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={
            **os.environ,
            "FERRY_WORK_DIR": str(tmp_path),
            "X509_USER_PROXY": "x509up",
            "S3CFG": "/submit/host/home/alice/s3.cfg",
        },
    )
    assert p.returncode == 0, p.stderr
    assert record(tmp_path)["stdout_tail"] == "proxy-bytes\ns3-config\n"


@pytest.mark.container
def test_credentials_are_copied_into_the_container(
    tmp_path: Path, busybox: Path, outside_tmp: Path
) -> None:
    """The container's environment is clean and binds only the work directory: as
    pegasus-lite's container_env, the credential files are copied into the work
    directory (0600) and their variables point there; a kept work directory does not
    keep the copies."""
    (outside_tmp / "x509up_u1000").write_text("proxy-bytes\n")
    spec = write_spec(
        tmp_path,
        arguments=["-c", 'echo "$X509_USER_PROXY"; cat "$X509_USER_PROXY"; exit 5'],
        container={"image": f"file://{busybox}", "runtime": "charliecloud"},
    )
    env = {
        "FERRY_IMAGE_CACHE": str(tmp_path / "cache"),
        "X509_USER_PROXY": str(outside_tmp / "x509up_u1000"),
    }
    p = worker(spec, "--keep-workdir", env=env)
    assert p.returncode == 1, p.stderr
    rec = record(tmp_path)
    path, content = rec["stdout_tail"].splitlines()
    assert path.startswith("/srv/.ferry/credentials/") and path.endswith("/x509up_u1000")
    assert content == "proxy-bytes"
    kept = Path(rec["workdir"])
    assert rec["workdir_kept"] and kept.is_dir() and not (kept / ".ferry" / "credentials").exists()


@pytest.mark.container
def test_a_mount_the_runtime_cannot_honour_fails_the_container_step(
    tmp_path: Path, busybox: Path
) -> None:
    """``Container(mounts=["/var/tmp:/data:ro"])`` on charliecloud, whose binds are
    read-write: the container step fails (exit 6) naming the mount, before the job runs;
    it used to be a worker error (exit 2) with a traceback."""
    spec = write_spec(
        tmp_path,
        arguments=["-c", f"touch {tmp_path}/ran"],
        container={
            "image": f"file://{busybox}",
            "runtime": "charliecloud",
            "mounts": ["/var/tmp:/data:ro"],
        },
    )
    p = worker(spec, env={"FERRY_IMAGE_CACHE": str(tmp_path / "cache")})
    assert p.returncode == 6, p.stderr
    assert "Traceback" not in p.stderr and "/var/tmp:/data:ro" in p.stderr
    rec = record(tmp_path)
    assert rec["failed_step"] == "container" and "read-only" in rec["failures"][0]["reason"]
    assert not (tmp_path / "ran").exists()


def test_a_symlinked_executable_is_made_executable(tmp_path: Path) -> None:
    """HTCondor's sandbox copy of a staged executable comes in as a symlink (condorio);
    pegasus-lite runs ``chmod +x`` on it whatever it is. The worker used to set the bit
    on copies only: the job failed with 'Permission denied'."""
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    (sandbox / "tool").write_text('#!/bin/sh\necho tool ran with "$1"\n')
    (sandbox / "tool").chmod(0o640)
    spec = write_spec(
        tmp_path,
        executable="tool",
        arguments=["a b"],
        inputs=[
            {
                "lfn": "tool",
                "executable": True,
                "symlink": True,
                "sources": [{"url": f"file://{sandbox}/tool"}],
            }
        ],
    )
    p = worker(spec)
    assert p.returncode == 0, p.stderr
    assert record(tmp_path)["stdout_tail"] == "tool ran with a b\n"
    assert (sandbox / "tool").stat().st_mode & 0o777 == 0o750


# -- the job's process group after the job -----------------------------------------------------

SIM = """
import signal, sys, time
def term(*_):
    time.sleep(1.0)  # a big checkpoint takes a while to write
    open("state.ckpt", "w").write("42\\n")
    sys.exit(3)
signal.signal(signal.SIGTERM, term)
while True:
    time.sleep(0.05)
"""


def test_a_wrapped_programs_checkpoint_is_waited_for_after_term(tmp_path: Path) -> None:
    """Jobs are often shell wrappers. At the checkpoint time the whole process group
    gets TERM: the shell dies at once, the program it runs writes its checkpoint in its
    TERM handler. The worker used to stage checkpoints out as soon as the shell was
    gone, before the file was written (and left the program running): the checkpoint
    was lost. Now the group gets its kill_grace."""
    (tmp_path / "sim.py").write_text(SIM)
    ck = tmp_path / "ck" / "state.ckpt"
    spec = write_spec(
        tmp_path,
        arguments=["-c", f"{sys.executable} {tmp_path}/sim.py; echo wrapper done"],
        checkpoints=[{"lfn": "state.ckpt", "url": f"file://{ck}"}],
        timeout=1,
        kill_grace=20,
    )
    t0 = time.monotonic()
    p = worker(spec)
    assert p.returncode == 1, p.stderr
    assert time.monotonic() - t0 < 15  # the group ended well before the KILL was due
    assert ck.read_text() == "42\n"
    rec = record(tmp_path)
    assert rec["timed_out"] and rec["signal"] == signal.SIGTERM
    assert [(t["direction"], t["ok"]) for t in rec["transfers"]] == [("checkpoint-out", True)]


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] not in (b"Z", b"X")


def test_processes_the_job_leaves_behind_are_killed(tmp_path: Path) -> None:
    """A batch system ends what a job leaves running when it exits (HTCondor kills the
    job's process family); under `ferry run` nobody else would, and the process would
    outlive its work directory. It used to."""
    spec = write_spec(tmp_path, arguments=["-c", f"sleep 300 & echo $! > {tmp_path}/bg.pid"])
    p = worker(spec)
    pid = int((tmp_path / "bg.pid").read_text())
    try:
        assert p.returncode == 0, p.stderr
        deadline = time.monotonic() + 5
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(pid)
    finally:
        if _running(pid):
            os.kill(pid, signal.SIGKILL)


# -- a Pegasus workflow in a container, end to end ---------------------------------------------

TOOL = """#!/bin/sh
echo "argc=$#"
for a in "$@"; do echo "[$a]"; done
echo "FOO=$FOO HOME=$HOME PWD=$(pwd) image=$FERRY_IMAGE_VAR"
cat "$2" > "$4"
cat
echo to-stderr >&2
"""


@pytest.mark.container
def test_pegasus_docker_container_workflow_runs_in_charliecloud(
    tmp_path: Path, busybox: Path
) -> None:
    """Container.DOCKER with a ``docker save`` tar on the submit host (image_site,
    checksum), a stageable executable run inside it, stdin/stdout/stderr files, an env
    profile, arguments with spaces, quotes and an empty one, an LFN with a space."""
    from Pegasus.api import (
        Container,
        File,
        Job,
        ReplicaCatalog,
        Transformation,
        TransformationCatalog,
        Workflow,
    )

    (tmp_path / "tool.sh").write_text(TOOL)
    (tmp_path / "in put.txt").write_text("input data\n")
    (tmp_path / "stdin.txt").write_text("stdin data\n")
    image = Container(
        "bb",
        Container.DOCKER,
        image=f"file://{busybox}",
        image_site="local",
        checksum={"sha256": sha(busybox.read_bytes())},
    )
    tool = Transformation(
        "tool", site="local", pfn=str(tmp_path / "tool.sh"), is_stageable=True, container=image
    )
    tool.add_env(FOO="bar baz")
    rc = ReplicaCatalog()
    rc.add_replica("local", "in put.txt", f"file://{tmp_path}/in%20put.txt")
    rc.add_replica("local", "stdin.txt", f"file://{tmp_path}/stdin.txt")
    fin, fout = File("in put.txt"), File("out.txt")
    job = Job(tool, _id="t1").add_args("-i", fin, "-o", fout, 'it\'s "quoted"', "")
    job.add_inputs(fin).add_outputs(fout)
    job.set_stdin(File("stdin.txt")).set_stdout(File("t1.out")).set_stderr(File("t1.err"))
    wf = Workflow("cwf").add_jobs(job)
    wf.add_transformation_catalog(
        TransformationCatalog().add_containers(image).add_transformations(tool)
    )
    wf.add_replica_catalog(rc)
    wf.write(str(tmp_path / "wf.yml"))
    run = tmp_path / "run"
    res = ferry(
        "run",
        "wf.yml",
        "-d",
        str(run),
        "-O",
        "out",
        "-j",
        "1",
        cwd=tmp_path,
        env={"FERRY_IMAGE_CACHE": str(tmp_path / "cache")},
    )
    assert res.returncode == 0, res.stdout + res.stderr
    out = tmp_path / "out"
    assert (out / "out.txt").read_text() == "input data\n"
    assert (out / "t1.out").read_text() == (
        'argc=6\n[-i]\n[in put.txt]\n[-o]\n[out.txt]\n[it\'s "quoted"]\n[]\n'
        "FOO=bar baz HOME=/srv PWD=/srv image=from-image\nstdin data\n"
    )
    assert (out / "t1.err").read_text() == "to-stderr\n"
    [rec] = records(run, "t1")
    assert rec["container"]["runtime"] == "charliecloud"
    assert rec["container"]["sha256"] == f"sha256:{sha(busybox.read_bytes())}"
    outs = {t["lfn"]: t["sha256"] for t in rec["transfers"] if t["direction"] == "output"}
    assert outs["out.txt"] == "sha256:" + sha(b"input data\n")


def test_checkpoints_are_kept_when_the_outputs_cannot_be_staged_out(tmp_path: Path) -> None:
    """pegasus-lite stages checkpoint files out after the task whatever happens next; a
    job whose outputs then fail to reach their destination is retried, and the retry
    should start from the latest checkpoint. The worker used to keep checkpoints only
    for failed or evicted jobs."""
    (tmp_path / "blocker").write_text("")
    ck = tmp_path / "ck" / "state.ckpt"
    spec = write_spec(
        tmp_path,
        arguments=["-c", "echo 99 > state.ckpt; echo result > out.txt"],
        checkpoints=[{"lfn": "state.ckpt", "url": f"file://{ck}"}],
        outputs=[{"lfn": "out.txt", "destinations": [{"url": f"file://{tmp_path}/blocker/o"}]}],
    )
    p = worker(spec)
    assert p.returncode == 5, p.stderr
    rec = record(tmp_path)
    assert rec["failed_step"] == "stage-out"
    assert ck.read_text() == "99\n"
    assert ("checkpoint-out", True) in [(t["direction"], t["ok"]) for t in rec["transfers"]]


def test_a_sif_image_is_staged_once_and_run_by_apptainer(
    tmp_path: Path, standin: dict[str, str]
) -> None:
    """Stand-in apptainer. A ``.sif`` (Container.SINGULARITY) is checked and cached once
    per node under its sha256; ``apptainer exec`` gets the cached file, the work
    directory at /srv (and at its own path), a clean environment with the job's
    variables as APPTAINERENV_*, and the job's stdin."""
    image = tmp_path / "tool.sif"
    image.write_bytes(os.urandom(8192))
    image_sha = sha(image.read_bytes())
    (tmp_path / "in.txt").write_text("stdin for the job\n")
    spec = write_spec(
        tmp_path,
        arguments=["-c", 'cat > got.txt; echo "V=$V"'],
        environment={"V": "a b"},
        stdin="in.txt",
        inputs=[{"lfn": "in.txt", "sources": [{"url": f"file://{tmp_path}/in.txt"}]}],
        outputs=[{"lfn": "got.txt", "destinations": [{"url": f"file://{tmp_path}/got.txt"}]}],
        container={"image": f"file://{image}", "sha256": image_sha},
    )
    for attempt in (1, 2):
        p = worker(spec, env={**standin, "SECRET_OF_THE_NODE": "x"})
        assert p.returncode == 0, p.stderr
        rec = record(tmp_path, attempt)
        assert rec["stdout_tail"] == "V=a b\n"
        assert rec["container"]["runtime"] == "apptainer" and rec["container"]["kind"] == "sif"
        assert rec["container"]["cached"] == (attempt == 2)
    assert (tmp_path / "got.txt").read_text() == "stdin for the job\n"
    blob = tmp_path / "cache" / "blobs" / f"{image_sha}.sif"
    assert blob.read_bytes() == image.read_bytes()
    first, second = calls(standin, "apptainer")
    argv, env = first["argv"], first["env"]
    workdir = option(argv, "--bind").split(":")[0]
    assert argv[: argv.index("--bind")] == ["exec", "--cleanenv", "--no-home", "--home", "/srv"]
    assert f"{workdir}:/srv" in argv and f"{workdir}:{workdir}" in argv
    assert option(argv, "--pwd") == "/srv"
    assert argv[argv.index(str(blob)) + 1 :] == ["/bin/sh", "-c", 'cat > got.txt; echo "V=$V"']
    assert env["APPTAINERENV_V"] == "a b" and "SECRET_OF_THE_NODE" not in env
    assert [t["direction"] for t in record(tmp_path, 2)["transfers"]] == ["input", "output"]


def test_a_stdout_file_that_cannot_be_opened_is_named(tmp_path: Path) -> None:
    """The job cannot start because its stdout is a directory (an input was staged
    there): the failure names that file, not only the executable."""
    (tmp_path / "x").write_text("x\n")
    spec = write_spec(
        tmp_path,
        executable="/bin/echo",
        stdout="sub",
        inputs=[{"lfn": "x", "path": "sub/x", "sources": [{"url": f"file://{tmp_path}/x"}]}],
    )
    p = worker(spec)
    assert p.returncode == 1
    [f] = record(tmp_path)["failures"]
    assert f["step"] == "run" and f["reason"].startswith("cannot start /bin/echo: ")
    assert "/sub: Is a directory" in f["reason"]


def test_an_image_urls_secrets_stay_out_of_the_record(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    """An image behind a password or a pre-signed URL that cannot be fetched: the
    record's failure named the URL as the spec gave it, secrets and all (DESIGN:
    secrets never appear in records)."""
    url = (
        f"http://alice:s3cretPW@{fault_server.url[len('http://') :]}/lite-audit/none.sif"
        "?X-Amz-Signature=abcdef0123&X-Amz-Credential=AKIAEXAMPLE"
    )
    spec = write_spec(
        tmp_path,
        transfer={"max_attempts": 1},
        container={"image": url, "runtime": "apptainer"},
    )
    p = worker(spec, env={"FERRY_IMAGE_CACHE": str(tmp_path / "cache")})
    assert p.returncode == 6, p.stderr
    text = (tmp_path / "job1.1.json").read_text()
    assert "none.sif" in text and record(tmp_path)["failed_step"] == "container"
    for secret in ("s3cretPW", "abcdef0123", "AKIAEXAMPLE"):
        assert secret not in text and secret not in p.stderr
