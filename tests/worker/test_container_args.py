"""A Pegasus container's extra runtime arguments (``Container(arguments=...)``, the
profile ``pegasus.container.arguments``), its launcher (``container.launcher`` and
``container.launcher.arguments``) and an image on the compute site itself
(``image_site``), from the job spec to the runtime's command line, and from a
Pegasus.api workflow through ``ferry plan`` / ``ferry run``.

pegasus-lite (reference/pegasus-lite.md, "Step 5 with a container") puts the
arguments before the image (``singularity exec ... [args] IMAGE ...``, ``docker run
... [args] --name ... IMAGE``) and the launcher (``srun``) in front of the whole
command.

charliecloud really runs here (the job's output shows what ch-run was given).
apptainer, singularity, docker and podman cannot: their tests put the *stand-in*
executables of tests/worker/test_lite_audit.py first on PATH, which record their
command line and run the job on the host in the work directory. The launcher is a
stand-in ``srun`` too (no batch system here): it records its command line and
environment, drops its own options and runs the rest.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry.plugins.errors import ConfigError
from ferry.worker.jobspec import json_schema, load_jobspec
from tests.containers.images import build_busybox_archive
from tests.planner.helpers import ferry, records, specs
from tests.worker.test_lite_audit import STANDIN, calls
from tests.worker.test_worker import record, sha, worker, write_spec

#: a stand-in launcher: records itself, drops its leading options, runs the rest
SRUN = r"""#!{python}
import json, os, sys
args = sys.argv[1:]
state = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(sys.argv[0]))), "standin-state")
with open(os.path.join(state, "calls.jsonl"), "a") as f:
    f.write(json.dumps({{"prog": "srun", "argv": args, "env": dict(os.environ)}}) + "\n")
while args and args[0].startswith("-"):
    args.pop(0)
os.execve(args[0], args, os.environ)
"""

#: records ch-run's command line, then runs the real one
CH_RUN_LOG = r"""#!/bin/sh
printf '%s\n' "$@" > "{log}"
exec /usr/bin/ch-run "$@"
"""


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Stand-in apptainer, singularity, docker, podman and srun first on PATH."""
    bindir, state = tmp_path / "standin-bin", tmp_path / "standin-state"
    bindir.mkdir()
    state.mkdir()
    for name in ("apptainer", "singularity", "docker", "podman", "srun"):
        path = bindir / name
        path.write_text((SRUN if name == "srun" else STANDIN).format(python=sys.executable))
        path.chmod(0o755)
    yield {
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "STANDIN_STATE": str(state),
        "FERRY_IMAGE_CACHE": str(tmp_path / "cache"),
    }


@pytest.fixture
def busybox(tmp_path: Path) -> Path:
    return build_busybox_archive(tmp_path / "busybox.tar").path


def logged_ch_run(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """FERRY_CHARLIECLOUD_BIN: the real ch-run behind a script that logs its argv."""
    log = tmp_path / "ch-run.argv"
    wrapper = tmp_path / "ch-run-logged"
    wrapper.write_text(CH_RUN_LOG.format(log=log))
    wrapper.chmod(0o755)
    return {"FERRY_CHARLIECLOUD_BIN": str(wrapper)}, log


# -- the job spec ------------------------------------------------------------------------------


def test_the_spec_carries_arguments_launcher_and_in_place_and_checks_them() -> None:
    """The fields are in the JSON Schema, a version 1 spec without them loads as before,
    and a value the runtime could not take is refused on load, naming the field."""
    props = json_schema()["$defs"]["Container"]["properties"]
    assert props["arguments"]["type"] == "array" and props["launcher"]["type"] == "array"
    assert props["in_place"]["type"] == "boolean"
    old = load_jobspec(
        json.dumps({"version": 1, "id": "j", "executable": "x", "container": {"image": "a.sif"}})
    )
    assert old.container is not None
    assert (old.container.arguments, old.container.launcher, old.container.in_place) == (
        [],
        [],
        False,
    )

    def refused(container: dict[str, object]) -> str:
        spec = {"version": 1, "id": "j", "executable": "x", "container": container}
        with pytest.raises(ConfigError) as info:
            load_jobspec(json.dumps(spec), source="j.json")
        return str(info.value)

    assert refused({"image": "a.sif", "arguments": ["--nv", "a\0b"]}).startswith(
        "j.json: $.container.arguments[1]: "
    )
    assert "$.container.launcher[0]: the launcher's program is empty" in refused(
        {"image": "a.sif", "launcher": ["", "-n", "2"]}
    )
    assert refused({"image": "https://example.org/a.sif", "in_place": True}) == (
        "j.json: $.container.in_place: only a local image (a path or file:// URL) can be"
        " used in place, not a https:// one"
    )
    assert "Expected `array`" in refused({"image": "a.sif", "arguments": "--nv"})


# -- apptainer / singularity (stand-ins) ---------------------------------------------------------


@pytest.mark.parametrize("runtime", ["apptainer", "singularity"])
def test_apptainer_and_singularity_get_the_arguments_just_before_the_image(
    tmp_path: Path, standin: dict[str, str], runtime: str
) -> None:
    """Stand-in apptainer/singularity: ``exec ... [--bind ...] ARGS IMAGE ARGV``, as
    pegasus-lite's ``$singularity_exec exec ... [container.arguments] <image> ...``; an
    argument with a blank stays one argument."""
    image = tmp_path / "tool.sif"
    image.write_bytes(os.urandom(4096))
    args = ["--contain", "--bind", "/opt/a b:/data", "--nv"]
    spec = write_spec(
        tmp_path,
        arguments=["-c", "echo ran"],
        container={
            "image": f"file://{image}",
            "sha256": sha(image.read_bytes()),
            "runtime": runtime,
            "arguments": args,
        },
    )
    p = worker(spec, env=standin)
    assert p.returncode == 0, p.stderr
    rec = record(tmp_path)
    assert rec["stdout_tail"] == "ran\n"
    assert rec["container"]["arguments"] == args
    wd = rec["workdir"]
    blob = tmp_path / "cache" / "blobs" / f"{sha(image.read_bytes())}.sif"
    [call] = calls(standin, runtime)
    assert call["argv"] == [
        "exec",
        "--cleanenv",
        "--no-home",
        "--home",
        "/srv",
        "--bind",
        f"{wd}:/srv",
        "--bind",
        f"{wd}:{wd}",
        "--pwd",
        "/srv",
        *args,
        str(blob),
        "/bin/sh",
        "-c",
        "echo ran",
    ]


# -- docker / podman (stand-ins) -------------------------------------------------------------------


@pytest.mark.parametrize("runtime", ["docker", "podman"])
def test_docker_and_podman_get_the_arguments_before_the_image(
    tmp_path: Path, standin: dict[str, str], busybox: Path, runtime: str
) -> None:
    """Stand-in docker/podman: the arguments come after every option ferry sets but the
    entrypoint (pegasus-lite: ``... --entrypoint /bin/sh [container.arguments] --name ...
    <image>``; ferry's ``--entrypoint`` must stay the job's command), and before the image."""
    args = ["--gpus", "all", "--read-only"]
    spec = write_spec(
        tmp_path,
        arguments=["-c", "echo ran"],
        container={"image": f"file://{busybox}", "runtime": runtime, "arguments": args},
    )
    p = worker(spec, env=standin)
    assert p.returncode == 0, p.stderr
    assert record(tmp_path)["stdout_tail"] == "ran\n"
    [run] = [c["argv"] for c in calls(standin, runtime) if c["argv"][0] == "run"]
    k = run.index("--entrypoint") - len(args)
    image_id = run[run.index("--entrypoint") + 2]
    assert image_id.startswith("sha256:")
    assert run[k:] == [*args, "--entrypoint", "/bin/sh", image_id, "-c", "echo ran"]
    assert "--gpus" not in run[:k] and "--read-only" not in run[:k]
    assert run[run.index("-w") + 1] == "/srv" and run.index("-w") < k


# -- charliecloud (real) ------------------------------------------------------------------------


@pytest.mark.container
def test_ch_run_gets_the_arguments_before_the_image_directory_and_the_separator(
    tmp_path: Path, busybox: Path
) -> None:
    """Real ch-run (behind a wrapper that logs its argv): the arguments come before the
    image directory and ``--``; the job sees what they did (a variable set with
    ``--set-env``, a directory bound with ``-b``)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "note.txt").write_text("bound by the arguments\n")
    args = ["--set-env=FROM_ARGS=a b", "-b", f"{data}:/mnt"]
    spec = write_spec(
        tmp_path,
        arguments=["-c", 'echo "FROM_ARGS=$FROM_ARGS"; cat /mnt/note.txt'],
        container={"image": f"file://{busybox}", "runtime": "charliecloud", "arguments": args},
    )
    env, log = logged_ch_run(tmp_path)
    p = worker(spec, env={**env, "FERRY_IMAGE_CACHE": str(tmp_path / "cache")})
    assert p.returncode == 0, p.stderr
    rec = record(tmp_path)
    assert rec["stdout_tail"] == "FROM_ARGS=a b\nbound by the arguments\n"
    argv = log.read_text().splitlines()
    rootfs = argv[argv.index("--") - 1]
    assert rootfs.endswith("/rootfs")
    assert argv[argv.index("--") - 1 - len(args) :] == [
        *args,
        rootfs,
        "--",
        "/bin/sh",
        "-c",
        'echo "FROM_ARGS=$FROM_ARGS"; cat /mnt/note.txt',
    ]
    assert argv[:4] == ["-b", f"{rec['workdir']}:/srv", "-c", "/srv"]


# -- the launcher --------------------------------------------------------------------------------


@pytest.mark.container
def test_the_launcher_runs_ch_run_with_the_batch_variables(
    tmp_path: Path, busybox: Path, standin: dict[str, str]
) -> None:
    """Stand-in srun, real ch-run: the launcher is in front of the whole command, found
    on the host's PATH (ch-run's own environment is the job's), and gets the host's
    SLURM_* variables it needs inside the allocation; the job still runs in the image."""
    spec = write_spec(
        tmp_path,
        arguments=["-c", "echo in-image=$FERRY_IMAGE_VAR"],
        container={
            "image": f"file://{busybox}",
            "runtime": "charliecloud",
            "launcher": ["srun", "--kill-on-bad-exit", "--ntasks=1"],
        },
    )
    p = worker(spec, env={**standin, "SLURM_JOB_ID": "4242", "NOT_FOR_SRUN": "x"})
    assert p.returncode == 0, p.stderr
    rec = record(tmp_path)
    assert rec["stdout_tail"] == "in-image=from-image\n"
    assert rec["container"]["launcher"] == ["srun", "--kill-on-bad-exit", "--ntasks=1"]
    [call] = calls(standin, "srun")
    assert call["argv"][:3] == ["--kill-on-bad-exit", "--ntasks=1", "/usr/bin/ch-run"]
    assert call["argv"][3:7] == ["-b", f"{rec['workdir']}:/srv", "-c", "/srv"]
    assert call["argv"][-3:] == ["/bin/sh", "-c", "echo in-image=$FERRY_IMAGE_VAR"]
    assert call["env"]["SLURM_JOB_ID"] == "4242" and "NOT_FOR_SRUN" not in call["env"]


def test_the_launcher_goes_in_front_of_apptainer(tmp_path: Path, standin: dict[str, str]) -> None:
    """Stand-in srun and apptainer: ``srun ARGS apptainer exec ... IMAGE ARGV``, with the
    container arguments still before the image."""
    image = tmp_path / "tool.sif"
    image.write_bytes(os.urandom(1024))
    spec = write_spec(
        tmp_path,
        arguments=["-c", "echo ran"],
        container={
            "image": f"file://{image}",
            "runtime": "apptainer",
            "arguments": ["--nv"],
            "launcher": ["srun", "--ntasks=1", "--exclusive"],
        },
    )
    p = worker(spec, env=standin)
    assert p.returncode == 0, p.stderr
    [launched] = calls(standin, "srun")
    apptainer = str(Path(standin["PATH"].split(":")[0]) / "apptainer")
    assert launched["argv"][:4] == ["--ntasks=1", "--exclusive", apptainer, "exec"]
    [run] = [c["argv"] for c in calls(standin, "apptainer")]
    assert run == launched["argv"][3:]
    assert run[-5] == "--nv" and run[-4].endswith(".sif")


def test_a_launcher_the_node_lacks_fails_the_container_step(
    tmp_path: Path, standin: dict[str, str]
) -> None:
    """No such launcher on the node: the container step fails, naming the launcher (exit
    6, as for an image that cannot be prepared), before the inputs are staged; the job
    does not run."""
    image = tmp_path / "tool.sif"
    image.write_bytes(os.urandom(1024))
    (tmp_path / "in.txt").write_text("input\n")
    spec = write_spec(
        tmp_path,
        arguments=["-c", f"touch {tmp_path}/ran"],
        inputs=[{"lfn": "in.txt", "sources": [{"url": f"file://{tmp_path}/in.txt"}]}],
        container={"image": f"file://{image}", "launcher": ["no-such-launcher-xyz", "-n", "2"]},
    )
    p = worker(spec, env=standin)
    assert p.returncode == 6, p.stderr
    rec = record(tmp_path)
    assert rec["failed_step"] == "container"
    assert rec["failures"][0]["reason"] == (
        "container.launcher 'no-such-launcher-xyz' is not an executable file on this node's PATH"
    )
    assert [t["direction"] for t in rec["transfers"]] == ["image"]
    assert not (tmp_path / "ran").exists()
    assert not (tmp_path / "standin-state" / "calls.jsonl").exists()  # no runtime was started


# -- an image on the compute site: used in place ---------------------------------------------------


def test_an_in_place_image_is_run_where_it_is_not_copied_into_the_cache(
    tmp_path: Path, standin: dict[str, str]
) -> None:
    """Stand-in apptainer. ``in_place`` (the planner's, for an image whose image.site is
    the compute site): apptainer gets the image's own path; nothing is downloaded into
    the node cache. Without it, the same image is copied into the cache."""
    image = tmp_path / "site" / "tool.sif"
    image.parent.mkdir()
    image.write_bytes(os.urandom(4096))
    container = {"image": f"file://{image}", "runtime": "apptainer", "in_place": True}
    spec = write_spec(tmp_path, arguments=["-c", "echo ran"], container=container)
    p = worker(spec, env=standin)
    assert p.returncode == 0, p.stderr
    rec = record(tmp_path)
    assert rec["container"]["linked"] and rec["container"]["path"] == str(image)
    assert not any(t["direction"] == "image" for t in rec["transfers"])
    assert not list((tmp_path / "cache").glob("blobs/*"))
    [run] = [c["argv"] for c in calls(standin, "apptainer")]
    assert run[-4:] == [str(image), "/bin/sh", "-c", "echo ran"]

    container["in_place"] = False
    spec = write_spec(tmp_path, arguments=["-c", "echo ran"], container=container)
    p = worker(spec, env=standin)
    assert p.returncode == 0, p.stderr
    rec = record(tmp_path, 2)
    assert not rec["container"]["linked"]
    assert [t["direction"] for t in rec["transfers"]] == ["image"]
    assert rec["container"]["path"].startswith(str(tmp_path / "cache" / "blobs"))


def test_an_in_place_image_is_checked_against_its_sha256_once_per_version(
    tmp_path: Path, standin: dict[str, str]
) -> None:
    """Stand-in apptainer. An in-place image is not copied, but its sha256 is still
    checked (pegasus-lite checks a symlinked input unless integrity checking is
    ``nosymlink``): once per node while the file stays as it is; a changed file is
    checked again, and a mismatch fails the container step with both sums."""
    image = tmp_path / "site" / "tool.sif"
    image.parent.mkdir()
    image.write_bytes(b"version 1" * 1000)
    good = sha(image.read_bytes())
    container = {"image": str(image), "sha256": good, "runtime": "apptainer", "in_place": True}
    spec = write_spec(tmp_path, arguments=["-c", "echo ran"], container=container)
    for attempt in (1, 2):
        p = worker(spec, env=standin)
        assert p.returncode == 0, p.stderr
        assert record(tmp_path, attempt)["container"]["linked"]
    assert len(list((tmp_path / "cache" / "records").glob("verified-*.json"))) == 1

    image.write_bytes(b"version 2" * 1000)  # replaced on the site: checked again
    p = worker(spec, env=standin)
    assert p.returncode == 6, p.stderr
    rec = record(tmp_path, 3)
    assert rec["failed_step"] == "container"
    [failure] = rec["failures"]
    assert (failure["expected"], failure["actual"]) == (good, sha(image.read_bytes()))
    assert failure["reason"] == (
        f"container image {image}: sha256 mismatch (expected {good}, got {failure['actual']})"
    )
    assert len(calls(standin, "apptainer")) == 2


# -- the planner ------------------------------------------------------------------------------------


def _workflow(
    tmp_path: Path,
    *,
    arguments: str | None,
    launcher: str | None = None,
    launcher_args: str | None = None,
    image: str = "/srv/images/tool.sif",
    image_site: str | None = "local",
    kind: str = "singularity",
    checksum: str | None = None,
) -> None:
    from Pegasus.api import Container, File, Job, Transformation, TransformationCatalog, Workflow

    cont = Container(
        "tool-img",
        Container.SINGULARITY if kind == "singularity" else Container.DOCKER,
        image,
        arguments=arguments,
        image_site=image_site,
        checksum={"sha256": checksum} if checksum else None,
    )
    tx = Transformation("sh", site="local", pfn="/bin/sh", container=cont)
    job = Job(tx, _id="j1").add_args("-c", 'echo "A=$FROM_ARGS"; cat /mnt/note.txt')
    job.set_stdout(File("j1.out"))
    if launcher:
        job.add_pegasus_profile(container_launcher=launcher)
    if launcher_args:
        job.add_pegasus_profile(container_launcher_arguments=launcher_args)
    wf = Workflow("cargs").add_jobs(job)
    wf.add_transformation_catalog(
        TransformationCatalog().add_containers(cont).add_transformations(tx)
    )
    wf.write(str(tmp_path / "workflow.yml"))


def test_ferry_plan_fills_arguments_launcher_and_in_place(tmp_path: Path) -> None:
    """Container(arguments=...) and the launcher profiles are split as a shell splits
    them into the spec (no warning any more); an image whose image_site is the compute
    site is used in place, one on another site is not."""
    _workflow(
        tmp_path,
        arguments="--nv --bind '/opt/a b:/data' --env X=\"1 2\"",
        launcher="srun",
        launcher_args="--kill-on-bad-exit -n 4",
    )
    res = ferry("plan", "workflow.yml", "--dir", "run", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "warning" not in res.stderr
    c = specs(tmp_path / "run")["j1"].container
    assert c is not None
    assert c.arguments == ["--nv", "--bind", "/opt/a b:/data", "--env", "X=1 2"]
    assert c.launcher == ["srun", "--kill-on-bad-exit", "-n", "4"]
    assert c.in_place and c.image == "file:///srv/images/tool.sif"

    _workflow(tmp_path, arguments=None, image_site="archive", checksum="ab" * 32)
    res = ferry("plan", "workflow.yml", "--dir", "run2", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    c = specs(tmp_path / "run2")["j1"].container
    assert c is not None and not c.in_place and c.arguments == [] and c.launcher == []
    assert c.sha256 == "ab" * 32

    # integrity checking "nosymlink": what is used in place is not checked (as Pegasus
    # skips symlinked files); a copied image still is
    for image_site, expected in (("local", None), ("archive", "ab" * 32)):
        _workflow(tmp_path, arguments=None, image_site=image_site, checksum="ab" * 32)
        run = f"run-{image_site}"
        res = ferry(
            "plan",
            "workflow.yml",
            "--dir",
            run,
            "-D",
            "pegasus.integrity.checking=nosymlink",
            cwd=tmp_path,
        )
        assert res.returncode == 0, res.stderr
        c = specs(tmp_path / run)["j1"].container
        assert c is not None and c.in_place == (image_site == "local") and c.sha256 == expected


def test_an_unbalanced_quote_is_one_planning_error_naming_the_container(tmp_path: Path) -> None:
    _workflow(tmp_path, arguments="--bind '/opt/a b:/data")
    res = ferry("plan", "workflow.yml", "--dir", "run", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr == (
        "ferry plan: error: container 'tool-img': profile pegasus.container.arguments"
        ' "--bind \'/opt/a b:/data" cannot be split into arguments: no closing quotation\n'
    )
    assert not (tmp_path / "run" / "plan.json").exists()

    _workflow(tmp_path, arguments=None, launcher='srun --comment "x')
    res = ferry("plan", "workflow.yml", "--dir", "run", cwd=tmp_path)
    assert res.returncode == 2
    assert "container 'tool-img': profile pegasus.container.launcher" in res.stderr
    assert len(res.stderr.splitlines()) == 1


def test_launcher_arguments_without_a_launcher_are_warned_about(tmp_path: Path) -> None:
    _workflow(tmp_path, arguments=None, launcher_args="-n 4")
    res = ferry("plan", "workflow.yml", "--dir", "run", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (
        "ferry: warning: container 'tool-img': profile pegasus.container.launcher.arguments"
        " is set without pegasus.container.launcher and is ignored"
    ) in res.stderr.splitlines()
    c = specs(tmp_path / "run")["j1"].container
    assert c is not None and c.launcher == []


@pytest.mark.container
def test_a_pegasus_workflow_runs_with_its_container_arguments_and_launcher(
    tmp_path: Path, busybox: Path, standin: dict[str, str]
) -> None:
    """``ferry run`` of a Pegasus.api workflow: Container.DOCKER (a ``docker save`` tar
    whose image_site is the compute site, ``local``) with ``arguments=`` for ch-run
    and a ``container.launcher`` (stand-in srun); ch-run really runs it. The image is
    used in place (not copied into the node cache), the arguments reach ch-run (the job
    sees their variable and bind), and the launcher ran the whole command."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "note.txt").write_text("from the bind\n")
    _workflow(
        tmp_path,
        arguments=f"'--set-env=FROM_ARGS=x y' -b {data}:/mnt",
        launcher="srun",
        launcher_args="--kill-on-bad-exit",
        image=f"file://{busybox}",
        kind="docker",
        checksum=sha(busybox.read_bytes()),
    )
    # srun alone on PATH: the stand-in runtimes would be picked before ch-run
    launcher_bin = tmp_path / "launcher-bin"
    launcher_bin.mkdir()
    (tmp_path / "standin-bin" / "srun").rename(launcher_bin / "srun")
    env = {**standin, "PATH": f"{launcher_bin}:{os.environ['PATH']}"}
    run = tmp_path / "run"
    res = ferry(
        "run", "workflow.yml", "-d", str(run), "-O", "out", "-j", "1", cwd=tmp_path, env=env
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "out" / "j1.out").read_text() == "A=x y\nfrom the bind\n"
    [rec] = records(run, "j1")
    assert rec["container"]["runtime"] == "charliecloud"
    assert rec["container"]["linked"] and rec["container"]["path"] == str(busybox)
    assert rec["container"]["arguments"] == ["--set-env=FROM_ARGS=x y", "-b", f"{data}:/mnt"]
    assert not any(t["direction"] == "image" for t in rec["transfers"])
    assert not list((tmp_path / "cache").glob("blobs/*"))
    [call] = calls(standin, "srun")
    assert call["argv"][:2] == ["--kill-on-bad-exit", "/usr/bin/ch-run"]
    k = call["argv"].index("--")
    assert call["argv"][k - 4 : k - 1] == ["--set-env=FROM_ARGS=x y", "-b", f"{data}:/mnt"]


def test_a_plugin_runtime_without_the_arguments_parameter_refuses_them(tmp_path: Path) -> None:
    """A plugin runtime written before container.arguments existed still runs jobs
    without them, and refuses a job with some rather than dropping them."""
    from ferry.containers import Runtime
    from ferry.worker.containers import ContainerRun

    class Old(Runtime):
        name = "old"
        binaries = ("sh",)
        kinds = frozenset({"dir"})

        def command(
            self,
            prepared,
            argv,
            *,
            workdir,
            env,
            gpus=0,
            gpu_vendor="nvidia",  # type: ignore[no-untyped-def]
            mounts=(),
            name=None,
        ):
            return ["old-run", prepared, *argv], dict(env)

    def run(arguments: list[str]) -> ContainerRun:
        return ContainerRun(Old(), "IMG", str(tmp_path), {}, 0, "nvidia", [], "n", arguments)

    assert run([]).command(["true"], env={}) == (["old-run", "IMG", "true"], {})
    with pytest.raises(
        ConfigError, match="container runtime old does not take container.arguments"
    ):
        run(["--x"]).command(["true"], env={})


def test_a_hand_written_catalogs_container_arguments_key_is_read(tmp_path: Path) -> None:
    """A hand-written transformation catalog may give a container's ``arguments`` as its
    own key (the API writes them as the profile); the profile wins when both are there."""
    (tmp_path / "tc.yml").write_text(
        "pegasus: '5.0'\n"
        "transformations:\n"
        "- name: sh\n"
        "  sites:\n"
        "  - {name: local, pfn: /bin/sh, type: installed, container: a}\n"
        "- name: ls\n"
        "  sites:\n"
        "  - {name: local, pfn: /bin/ls, type: installed, container: b}\n"
        "containers:\n"
        "- {name: a, type: singularity, image: /i/a.sif, arguments: --nv --contain}\n"
        "- name: b\n"
        "  type: singularity\n"
        "  image: /i/b.sif\n"
        "  arguments: --ignored\n"
        "  profiles: {pegasus: {container.arguments: --writable-tmpfs}}\n"
    )
    (tmp_path / "wf.yml").write_text(
        "pegasus: '5.0'\nname: w\njobs:\n"
        "- {type: job, name: sh, id: j1, arguments: [], uses: []}\n"
        "- {type: job, name: ls, id: j2, arguments: [], uses: []}\n"
    )
    res = ferry("plan", "wf.yml", "-t", "tc.yml", "--dir", "run", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    got = specs(tmp_path / "run")
    assert got["j1"].container is not None and got["j2"].container is not None
    assert got["j1"].container.arguments == ["--nv", "--contain"]
    assert got["j2"].container.arguments == ["--writable-tmpfs"]
