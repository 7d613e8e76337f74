"""Runtimes: exact command lines and environments, selection, plugins, docker load once.

The binaries are fake (``FERRY_<RUNTIME>_BIN`` points at a script), so these
tests pin what ferry asks of each runtime without needing it installed; the
real runs are in test_charliecloud.py and test_real_runtimes.py.
"""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from ferry.containers import (
    Apptainer,
    Charliecloud,
    Docker,
    ImageCache,
    ImageConfig,
    ImageSpec,
    Mount,
    Podman,
    Prepared,
    Runtime,
    RuntimeUnavailable,
    Singularity,
    StagedImage,
    load_runtimes,
    select_runtime,
)
from ferry.containers import runtimes as runtimes_module
from ferry.plugins.errors import ConfigError
from ferry.plugins.registry import Registry
from ferry.plugins.spec import hookimpl
from tests.containers.images import build_busybox_archive, copy_fetch

WORK = "/scratch/job-42"
UID, GID = 1234, 5678


def fake_bin(directory: Path, name: str, body: str = 'printf "%s\\n" "$@"\n') -> str:
    """An executable script that stands in for a runtime binary (prints its argv)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


HOST_ENV = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/home/alice",
    "USER": "alice",
    "SECRET_HOST_VAR": "must-not-leak",
    "APPTAINERENV_INJECTED": "must-not-leak",
    "APPTAINER_CACHEDIR": "/var/tmp/alice-apptainer",
    "DOCKER_HOST": "unix:///run/user/1234/docker.sock",
    "CONTAINERS_CONF": "/etc/containers/x.conf",
}


def make(cls: type[Runtime], tmp_path: Path) -> Runtime:
    binary = fake_bin(tmp_path / "bin", cls.binaries[0])
    env = dict(HOST_ENV)
    env[cls.binary_env_var()] = binary
    return cls(env, uid=UID, gid=GID)


def staged(kind: str, path: str, key: str = "ab" * 32) -> StagedImage:
    return StagedImage(path=path, kind=kind, sha256=key, key=key, source=path)


def prepared(rt: Runtime, kind: str, image: str, config: ImageConfig | None = None) -> Prepared:
    return Prepared(rt.name, image, kind, staged(kind, image), config)


# -- apptainer / singularity ------------------------------------------------------------


@pytest.mark.parametrize("cls", [Apptainer, Singularity])
def test_apptainer_plain(cls: type[Runtime], tmp_path: Path) -> None:
    rt = make(cls, tmp_path)
    prep = rt.prepare(staged("sif", "/cache/blobs/x.sif"), ImageCache(tmp_path / "c"))
    argv, env = rt.command(prep, ["./analyze", "-i", "f.b"], workdir=WORK, env={"FOO": "bar baz"})
    assert argv == [
        rt.binary,
        "exec",
        "--cleanenv",
        "--no-home",
        "--home",
        "/srv",
        "--bind",
        f"{WORK}:/srv",
        "--bind",
        f"{WORK}:{WORK}",
        "--pwd",
        "/srv",
        "/cache/blobs/x.sif",
        "./analyze",
        "-i",
        "f.b",
    ]
    prefix = "APPTAINERENV_" if cls is Apptainer else "SINGULARITYENV_"
    assert env == {
        "PATH": "/usr/bin:/bin",
        "HOME": "/home/alice",
        "USER": "alice",
        "APPTAINER_CACHEDIR": "/var/tmp/alice-apptainer",
        f"{prefix}FOO": "bar baz",
    }
    assert "bar baz" not in " ".join(argv)  # values stay off the command line


@pytest.mark.parametrize(("vendor", "flag"), [("nvidia", "--nv"), ("amd", "--rocm")])
def test_apptainer_gpus(vendor: str, flag: str, tmp_path: Path) -> None:
    rt = make(Apptainer, tmp_path)
    argv, _ = rt.command(
        prepared(rt, "sif", "/i.sif"),
        ["nvidia-smi"],
        workdir=WORK,
        env={},
        gpus=2,
        gpu_vendor=vendor,
    )
    assert argv[argv.index("/srv", argv.index("--pwd")) + 1] == flag
    assert argv[-2:] == ["/i.sif", "nvidia-smi"]


def test_apptainer_mounts_env_and_image_kinds(tmp_path: Path) -> None:
    rt = make(Apptainer, tmp_path)
    cache = ImageCache(tmp_path / "c")
    prep = rt.prepare(staged("docker-archive", "/cache/blobs/x.tar"), cache)
    assert prep.image == "docker-archive:///cache/blobs/x.tar"
    assert rt.prepare(staged("docker", "docker://busybox"), cache).image == "docker://busybox"
    assert rt.prepare(staged("dir", "/cvmfs/x/rootfs"), cache).image == "/cvmfs/x/rootfs"
    argv, env = rt.command(
        prep,
        ["sh", "-c", "echo $FOO"],
        workdir=WORK,
        env={"FOO": "1", "HOME": "/home/job", "LD_LIBRARY_PATH": "/opt/lib"},
        mounts=["/cvmfs/data.example.org", "/project/refs:/refs:ro"],
    )
    assert argv == [
        rt.binary,
        "exec",
        "--cleanenv",
        "--no-home",
        "--home",
        "/home/job",
        "--bind",
        f"{WORK}:/srv",
        "--bind",
        f"{WORK}:{WORK}",
        "--pwd",
        "/srv",
        "--bind",
        "/cvmfs/data.example.org:/cvmfs/data.example.org",
        "--bind",
        "/project/refs:/refs:ro",
        "docker-archive:///cache/blobs/x.tar",
        "sh",
        "-c",
        "echo $FOO",
    ]
    assert env["APPTAINERENV_FOO"] == "1"
    assert env["APPTAINERENV_LD_LIBRARY_PATH"] == "/opt/lib"
    assert "APPTAINERENV_HOME" not in env  # apptainer refuses it; --home sets HOME
    assert "APPTAINERENV_INJECTED" not in env and "SECRET_HOST_VAR" not in env
    with pytest.raises(ConfigError, match="--home"):
        rt.command(prep, ["true"], workdir=WORK, env={"HOME": "/a:/b"})


# -- docker / podman ---------------------------------------------------------------------


def test_docker_plain(tmp_path: Path) -> None:
    rt = make(Docker, tmp_path)
    prep = prepared(rt, "docker-archive", "sha256:" + "cd" * 32)
    argv, env = rt.command(
        prep, ["./analyze", "-i", "f.b"], workdir=WORK, env={"FOO": "bar"}, name="job-42-try-1"
    )
    assert argv == [
        rt.binary,
        "run",
        "--rm",
        "-i",
        "--init",
        "--user",
        f"{UID}:{GID}",
        "--pull=never",
        "-v",
        f"{WORK}:/srv",
        "-v",
        f"{WORK}:{WORK}",
        "-w",
        "/srv",
        "--name",
        "job-42-try-1",
        "-e",
        "FOO",
        "-e",
        "HOME=/srv",
        "--entrypoint",
        "./analyze",
        "sha256:" + "cd" * 32,
        "-i",
        "f.b",
    ]
    assert env == {
        "PATH": "/usr/bin:/bin",
        "HOME": "/home/alice",
        "USER": "alice",
        "DOCKER_HOST": "unix:///run/user/1234/docker.sock",
        "FOO": "bar",
    }
    assert rt.cleanup_command("job-42-try-1") == [rt.binary, "rm", "--force", "job-42-try-1"]


@pytest.mark.parametrize(
    ("cls", "vendor", "flags"),
    [
        (Docker, "nvidia", ["--gpus", "all"]),
        (Docker, "amd", ["--device", "/dev/kfd", "--device", "/dev/dri", "--group-add", "video"]),
        (Podman, "nvidia", ["--device", "nvidia.com/gpu=all"]),
        (
            Podman,
            "amd",
            ["--device", "/dev/kfd", "--device", "/dev/dri", "--group-add", "keep-groups"],
        ),
    ],
)
def test_docker_podman_gpus(
    cls: type[Runtime], vendor: str, flags: list[str], tmp_path: Path
) -> None:
    rt = make(cls, tmp_path)
    argv, _ = rt.command(
        prepared(rt, "docker", "nvidia/cuda:12.4.0-base-ubuntu22.04"),
        ["nvidia-smi"],
        workdir=WORK,
        env={},
        gpus=1,
        gpu_vendor=vendor,
    )
    start = argv.index("/srv", argv.index("-w")) + 1
    assert argv[start : start + len(flags)] == flags
    assert "--pull=never" not in argv  # a registry image may be pulled


def test_docker_mounts_and_env_routing(tmp_path: Path) -> None:
    rt = make(Docker, tmp_path)
    argv, env = rt.command(
        prepared(rt, "docker-archive", "sha256:" + "cd" * 32),
        ["python3", "run.py"],
        workdir=WORK,
        env={
            "TOKEN": "s3cr3t",
            "PATH": "/opt/conda/bin:/usr/bin",
            "LD_PRELOAD": "/opt/lib/x.so",
            "DOCKER_CONFIG": "/in/container",
        },
        mounts=["/data/refs:/refs:ro", "/scratch/shared"],
    )
    assert argv[argv.index("-w") + 2 :] == [
        "-v",
        "/data/refs:/refs:ro",
        "-v",
        "/scratch/shared:/scratch/shared",
        "-e",
        "TOKEN",
        "-e",
        "PATH=/opt/conda/bin:/usr/bin",
        "-e",
        "LD_PRELOAD=/opt/lib/x.so",
        "-e",
        "DOCKER_CONFIG=/in/container",
        "-e",
        "HOME=/srv",
        "--entrypoint",
        "python3",
        "sha256:" + "cd" * 32,
        "run.py",
    ]
    # the secret travels in the client's environment; the client's own PATH is untouched
    assert env["TOKEN"] == "s3cr3t" and "s3cr3t" not in " ".join(argv)
    assert env["PATH"] == "/usr/bin:/bin" and "LD_PRELOAD" not in env
    assert "SECRET_HOST_VAR" not in env


def test_podman_plain_as_user_and_as_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    catatonit = tmp_path / "catatonit"
    catatonit.touch()
    monkeypatch.setattr(Podman, "init_paths", (str(catatonit),))
    rt = make(Podman, tmp_path)
    argv, env = rt.command(
        prepared(rt, "docker-archive", "sha256:" + "cd" * 32), ["true"], workdir=WORK, env={}
    )
    assert argv == [
        rt.binary,
        "run",
        "--rm",
        "-i",
        "--init",
        "--userns=keep-id",
        "--security-opt",
        "label=disable",
        "--pull=never",
        "-v",
        f"{WORK}:/srv",
        "-v",
        f"{WORK}:{WORK}",
        "-w",
        "/srv",
        "-e",
        "HOME=/srv",
        "--entrypoint",
        "true",
        "sha256:" + "cd" * 32,
    ]
    assert env["CONTAINERS_CONF"] == "/etc/containers/x.conf" and "DOCKER_HOST" not in env
    root = Podman({**HOST_ENV, "FERRY_PODMAN_BIN": rt.binary or ""}, uid=0, gid=0)
    argv, _ = root.command(prepared(root, "docker", "busybox"), ["true"], workdir=WORK, env={})
    assert argv[4:7] == ["--init", "--user", "0:0"]
    # podman refuses --init when its init (catatonit) is missing: then it is left out
    catatonit.unlink()
    no_init = Podman({**HOST_ENV, "PATH": str(tmp_path), "FERRY_PODMAN_BIN": rt.binary or ""})
    argv, _ = no_init.command(
        prepared(no_init, "docker", "busybox"), ["true"], workdir=WORK, env={}
    )
    assert "--init" not in argv


def test_docker_prepare_of_a_registry_reference(tmp_path: Path) -> None:
    rt = make(Docker, tmp_path)
    prep = rt.prepare(staged("docker", "docker://busybox:1.36"), ImageCache(tmp_path / "c"))
    assert prep.image == "busybox:1.36"
    with pytest.raises(ConfigError, match="cannot run sif images"):
        rt.prepare(staged("sif", "/x.sif"), ImageCache(tmp_path / "c"))


FAKE_DOCKER = """\
state="$DOCKER_FAKE_STATE"
echo "$*" >> "$state/calls"
case "$1" in
  load) touch "$state/loaded"; echo "Loaded image: ferry-test/busybox:latest" ;;
  image) [ -e "$state/loaded" ] || { echo "Error: No such image: $4" >&2; exit 1; }; echo sha256:x ;;
  info) echo 28.2.2 ;;
esac
"""


@pytest.mark.parametrize("cls", [Docker, Podman])
def test_docker_archive_is_loaded_once_per_node(cls: type[Runtime], tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    binary = fake_bin(tmp_path / "bin", cls.binaries[0], FAKE_DOCKER)
    environ = {
        "PATH": "/usr/bin:/bin",
        cls.binary_env_var(): binary,
        "DOCKER_FAKE_STATE": str(state),
        "CONTAINERS_FAKE": "1",
    }
    # podman passes CONTAINERS_*, docker DOCKER_*: give both the state directory
    environ["CONTAINERS_FAKE_STATE"] = str(state)
    body = (
        FAKE_DOCKER
        if cls is Docker
        else FAKE_DOCKER.replace("DOCKER_FAKE_STATE", "CONTAINERS_FAKE_STATE")
    )
    Path(binary).write_text("#!/bin/sh\n" + body)
    archive = build_busybox_archive(tmp_path / "bb.tar")
    cache = ImageCache(tmp_path / "cache")
    st = cache.stage(ImageSpec(str(archive.path), sha256=archive.sha256), copy_fetch)

    first = cls(environ).prepare(st, cache)
    assert first.action == "loaded"
    assert first.image == "sha256:" + archive.config_digest
    assert first.config is not None and first.config.env_dict()["FERRY_IMAGE_VAR"] == "from-image"
    second = cls(environ).prepare(st, cache)
    assert second.action is None and second.image == first.image
    loads = [c for c in (state / "calls").read_text().splitlines() if c.startswith("load")]
    assert loads == [f"load -i {st.path}"]
    # someone removed the image behind our back: it is loaded again
    (state / "loaded").unlink()
    assert cls(environ).prepare(st, cache).action == "loaded"
    # another user's job loaded it already (the daemon is node-wide): no load at all
    other_cache = ImageCache(tmp_path / "other-user-cache")
    other = other_cache.stage(ImageSpec(str(archive.path), sha256=archive.sha256), copy_fetch)
    assert cls(environ).prepare(other, other_cache).action is None
    loads = [c for c in (state / "calls").read_text().splitlines() if c.startswith("load")]
    assert len(loads) == 2
    assert cls(environ).probe() is None


# -- charliecloud --------------------------------------------------------------------------


def _rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    for d in ("bin", "dev", "proc", "sys", "srv", "etc", "refs"):
        (root / d).mkdir(parents=True)
    for f in ("etc/passwd", "etc/group"):
        (root / f).touch()
    return root


def test_charliecloud_command(tmp_path: Path) -> None:
    rt = make(Charliecloud, tmp_path)
    root = _rootfs(tmp_path)
    config = ImageConfig(env=("PATH=/opt/bin:/bin", "IMG=1", "HOME=/root"))
    argv, env = rt.command(
        prepared(rt, "docker-archive", str(root), config),
        ["sh", "-c", "cat input.txt | sha256sum > output.txt"],
        workdir=WORK,
        env={"FOO": "bar", "LD_LIBRARY_PATH": "/opt/lib", "TOKEN": "s3cr3t"},
        mounts=[f"{tmp_path}:/refs"],
    )
    assert argv == [
        rt.binary,
        "-b",
        f"{WORK}:/srv",
        "-c",
        "/srv",
        "-b",
        f"{tmp_path}:/refs",
        "--env-no-expand",
        "--set-env=LD_LIBRARY_PATH=/opt/lib",
        str(root),
        "--",
        "sh",
        "-c",
        "cat input.txt | sha256sum > output.txt",
    ]
    # ch-run hands its own environment to the job: exactly the container's
    assert env == {
        "PATH": "/opt/bin:/bin",
        "IMG": "1",
        "HOME": "/srv",
        "FOO": "bar",
        "TOKEN": "s3cr3t",
        "USER": "alice",
    }


def test_charliecloud_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    rt = make(Charliecloud, tmp_path)
    root = _rootfs(tmp_path)
    prep = prepared(rt, "dir", str(root))
    with pytest.raises(ConfigError, match="read-only"):
        rt.command(prep, ["true"], workdir=WORK, env={}, mounts=[f"{tmp_path}:/refs:ro"])
    with pytest.raises(ConfigError, match="/elsewhere"):
        rt.command(prep, ["true"], workdir=WORK, env={}, mounts=[f"{tmp_path}:/elsewhere"])
    (root / "srv").rmdir()
    with pytest.raises(ConfigError, match="no /srv"):
        rt.command(prep, ["true"], workdir=WORK, env={})


# -- common checks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mount", "error"),
    [
        ("relative:/x", "absolute"),
        ("/a:/b:rx", "mode"),
        ("/a,b:/c", "','"),
        ("/a:/srv/x", "reserved"),
        ("/a:/", "reserved"),
        ("/a/../etc:/x", "'..'"),
        ("/a:/b:ro:x", "HOST"),
    ],
)
def test_bad_mounts(mount: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        Mount.parse(mount)


def test_mount_parse() -> None:
    assert Mount.parse("/data") == Mount("/data", "/data", False)
    assert Mount.parse("/data/:/in//here:ro") == Mount("/data", "/in/here", True)


def test_bad_calls(tmp_path: Path) -> None:
    rt = make(Docker, tmp_path)
    prep = prepared(rt, "docker", "busybox")
    with pytest.raises(ConfigError, match="empty"):
        rt.command(prep, [], workdir=WORK, env={})
    with pytest.raises(ConfigError, match="absolute"):
        rt.command(prep, ["true"], workdir="relative", env={})
    with pytest.raises(ConfigError, match="gpu_vendor"):
        rt.command(prep, ["true"], workdir=WORK, env={}, gpus=1, gpu_vendor="intel")
    with pytest.raises(ConfigError, match="not valid"):
        rt.command(prep, ["true"], workdir=WORK, env={"A=B": "x"})
    with pytest.raises(ConfigError, match="cannot be run by docker"):
        rt.command(prepared(make(Podman, tmp_path), "docker", "x"), ["true"], workdir=WORK, env={})


def test_binary_lookup(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    fake_bin(bindir, "apptainer")
    assert Apptainer({"PATH": str(bindir)}).binary == str(bindir / "apptainer")
    missing = Apptainer({"PATH": str(tmp_path / "none")})
    assert not missing.available() and "apptainer not found" in (missing.unavailable_reason() or "")
    bad = Apptainer({"PATH": str(bindir), "FERRY_APPTAINER_BIN": str(tmp_path / "nope")})
    assert not bad.available() and "FERRY_APPTAINER_BIN" in (bad.unavailable_reason() or "")
    assert Charliecloud.binary_env_var() == "FERRY_CHARLIECLOUD_BIN"
    with pytest.raises(RuntimeUnavailable, match="apptainer"):
        missing.command(prepared(missing, "sif", "/x.sif"), ["true"], workdir=WORK, env={})


# -- selection ------------------------------------------------------------------------------


def _node(tmp_path: Path, *binaries: str) -> dict[str, str]:
    bindir = tmp_path / "node-bin"
    bindir.mkdir(exist_ok=True)
    for b in binaries:
        fake_bin(bindir, b)
    return {"PATH": str(bindir)}


@pytest.mark.parametrize(
    ("kind", "installed", "expected"),
    [
        ("sif", ("singularity", "apptainer", "docker"), "apptainer"),
        ("sif", ("singularity", "docker"), "singularity"),
        ("docker-archive", ("docker", "podman", "ch-run"), "charliecloud"),
        ("docker-archive", ("docker", "podman"), "podman"),
        ("docker-archive", ("docker",), "docker"),
        ("dir", ("apptainer", "ch-run"), "charliecloud"),
        ("docker", ("docker", "singularity"), "singularity"),
        ("docker", ("docker", "ch-run"), "docker"),
    ],
)
def test_default_order(
    tmp_path: Path, kind: str, installed: tuple[str, ...], expected: str
) -> None:
    environ = _node(tmp_path, *installed)
    rt = select_runtime(
        ImageSpec("x", kind=kind), staged(kind, "x"), load_runtimes(), environ=environ
    )
    assert rt.name == expected


def test_nothing_suitable(tmp_path: Path) -> None:
    environ = _node(tmp_path, "docker")
    with pytest.raises(RuntimeUnavailable, match="tried apptainer .*not found.*singularity") as exc:
        select_runtime(
            ImageSpec("x.sif"), staged("sif", "/x.sif"), load_runtimes(), environ=environ
        )
    assert "sif" in str(exc.value)


def test_requested_runtime(tmp_path: Path) -> None:
    environ = _node(tmp_path, "docker", "ch-run")
    rts = load_runtimes()
    st = staged("docker-archive", "/x.tar")
    assert (
        select_runtime(ImageSpec("x.tar", runtime="docker"), st, rts, environ=environ).name
        == "docker"
    )
    with pytest.raises(RuntimeUnavailable) as exc:
        select_runtime(ImageSpec("x.tar", runtime="podman"), st, rts, environ=environ)
    assert "podman is not available" in str(exc.value)
    assert "available here: charliecloud, docker" in str(exc.value)
    with pytest.raises(ConfigError, match="not a known runtime.*known: apptainer"):
        select_runtime(ImageSpec("x.tar", runtime="lxc"), st, rts, environ=environ)
    with pytest.raises(ConfigError, match="charliecloud cannot run sif"):
        select_runtime(
            ImageSpec("x.sif", runtime="charliecloud"),
            staged("sif", "/x.sif"),
            rts,
            environ=environ,
        )


# -- plugins ----------------------------------------------------------------------------------


class SiteDocker(Docker):
    """A site's own docker wrapper, replacing the built-in."""

    binaries = ("site-docker",)


class Runc(Runtime):
    name = "runc"
    binaries = ("runc",)
    kinds = frozenset({"dir"})


def test_load_runtimes_from_the_registry() -> None:
    assert set(load_runtimes()) == {"apptainer", "singularity", "docker", "podman", "charliecloud"}
    reg = Registry(plugins={"runtimes": runtimes_module}, load_entrypoints=False)
    assert load_runtimes(reg) == {cls.name: cls for cls in runtimes_module.BUILTIN_RUNTIMES}

    class SitePlugin:
        @hookimpl
        def ferry_runtimes(self) -> list[type[Runtime]]:
            return [SiteDocker, Runc]

    class Another:
        @hookimpl
        def ferry_runtimes(self) -> list[object]:
            return [types.SimpleNamespace(name="x"), type("Dup", (Runtime,), {"name": "runc"})]

    class Broken:
        @hookimpl
        def ferry_runtimes(self) -> list[type[Runtime]]:
            raise RuntimeError("boom")

    reg = Registry(
        plugins={
            "runtimes": runtimes_module,
            "site": SitePlugin(),
            "another": Another(),
            "broken": Broken(),
        },
        load_entrypoints=False,
    )
    failures: list[str] = []
    found = load_runtimes(reg, failures=failures)
    assert found["docker"] is SiteDocker  # a plugin's runtime wins over the built-in
    assert found["runc"] is Runc  # the first plugin to declare a name keeps it
    assert found["apptainer"] is Apptainer
    assert any("'broken'" in f and "boom" in f for f in failures)
    assert any("'another'" in f and "not a named Runtime subclass" in f for f in failures)
    assert any("'another'" in f and "already declared by plugin 'site'" in f for f in failures)


def test_the_runtimes_plugin_declares_the_builtins() -> None:
    from ferry.plugins import builtin

    # what pyproject's entry point `runtimes = "ferry.plugins.builtin:runtimes"` loads
    assert builtin.runtimes.ferry_runtimes() == list(runtimes_module.BUILTIN_RUNTIMES)
    assert hasattr(type(builtin.runtimes).ferry_runtimes, "ferry_impl")
