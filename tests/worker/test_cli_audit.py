"""`ferry` and `ferry transfer` as a demanding user meets them: help, usage errors, the
``--json`` document in every outcome, interrupts, and the progress bar on a terminal.

Complements tests/worker/test_transfer_cli.py (whose helpers it reuses)."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ferry.planner.cli import COMMANDS
from tests.servers import FaultServer, NginxServer, free_port
from tests.worker.test_transfer_cli import entry, ferry, sha


def _ferry_on_a_terminal(*args: str, cwd: Path, timeout: float = 60) -> tuple[int, str]:
    """Run ``ferry ARGS`` with stdin, stdout and stderr on a pseudo-terminal."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.chdir(cwd)
        os.environ["COLUMNS"] = "1000"  # rich wraps at the terminal's width: no wrapped names
        os.execv(sys.executable, [sys.executable, "-m", "ferry.planner.cli", *args])
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        try:
            data = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        out += data
    else:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


# -- help and usage errors ----------------------------------------------------


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_help_has_usage_description_options_and_an_example(command: str) -> None:
    p = ferry(command, "--help")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"usage: ferry {command} ")
    assert "options:" in p.stdout and "-h, --help" in p.stdout
    assert f"\nexamples:\n  ferry {command}" in p.stdout or f") ferry {command}" in p.stdout
    # more than the one-line summary of `ferry --help`
    assert len(p.stdout.split("options:")[0].splitlines()) > 3


def test_top_level_help_lists_commands_and_examples() -> None:
    p = ferry("--help")
    assert p.returncode == 0
    assert all(name in p.stdout for name in COMMANDS)
    assert "examples:\n  ferry transfer" in p.stdout


def test_bare_ferry_is_a_usage_error_on_stderr() -> None:
    p = ferry()
    assert p.returncode == 2
    assert p.stdout == ""
    assert p.stderr.startswith("usage: ferry ")


def test_unknown_command_names_the_closest_one() -> None:
    p = ferry("trasnfer", "a", "b")
    assert p.returncode == 2 and p.stdout == ""
    assert "ferry: error: unknown command 'trasnfer' (did you mean 'transfer'?)" in p.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["transfer", "a", "b", "c"], "ferry transfer: error: unrecognized arguments: c"),
        (["plugins", "extra"], "ferry plugins: error: unrecognized arguments: extra"),
        (["status", "run1", "--bogus"], "ferry status: error: unrecognized arguments: --bogus"),
        (["-d", "transfer", "a", "b"], "ferry: error: unrecognized arguments: -d"),
    ],
)
def test_unrecognized_arguments_are_reported_by_the_parser_they_went_to(
    args: list[str], said: str, tmp_path: Path
) -> None:
    p = ferry(*args, cwd=tmp_path)
    assert p.returncode == 2
    assert said in p.stderr
    assert p.stdout == "" and not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    ("option", "value", "said"),
    [
        ("-m", "0", "argument -m/--max-attempts: '0' is not a number of rounds (1 or more)"),
        ("--max-attempts", "-3", "'-3' is not a number of rounds"),
        ("-n", "-1", "argument -n/--threads: '-1' is not a number of threads (0 or more)"),
        ("-n", "many", "'many' is not a number of threads"),
        ("--backoff", "-1", "argument --backoff: '-1' is not a number of seconds (0 or more)"),
    ],
)
def test_out_of_range_numbers_are_usage_errors(
    option: str, value: str, said: str, tmp_path: Path
) -> None:
    (tmp_path / "a").write_bytes(b"a")
    p = ferry("transfer", option, value, str(tmp_path / "a"), str(tmp_path / "b"))
    assert p.returncode == 2
    assert "usage: ferry transfer" in p.stderr and said in p.stderr
    assert not (tmp_path / "b").exists()


# -- SRC DEST -----------------------------------------------------------------


def test_an_empty_sha256_is_refused_not_ignored(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"payload")
    for value in ("", "  "):
        p = ferry("transfer", str(tmp_path / "a"), str(tmp_path / "b"), "--sha256", value)
        assert p.returncode == 1
        [line] = p.stderr.splitlines()
        assert "--sha256 is empty" in line
        assert not (tmp_path / "b").exists()


def test_sha256_in_upper_case_or_with_its_prefix_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"payload")
    digest = sha(b"payload").upper()
    for n, value in enumerate((digest, f"SHA256:{digest}")):
        p = ferry("transfer", str(tmp_path / "a"), str(tmp_path / f"b{n}"), "--sha256", value)
        assert p.returncode == 0, p.stderr
        assert (tmp_path / f"b{n}").read_bytes() == b"payload"


@pytest.mark.parametrize(
    ("src", "dest", "said"),
    [("", "b", "SRC: not a URL: ''"), ("a", "", "DEST: not a URL: ''")],
)
def test_a_bad_src_or_dest_says_which(src: str, dest: str, said: str, tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"a")
    p = ferry("transfer", src, dest, cwd=tmp_path)
    assert p.returncode == 1
    [line] = p.stderr.splitlines()
    assert line.endswith(said)


def test_a_directory_dest_needs_a_source_with_a_file_name(
    nginx_server: NginxServer, tmp_path: Path
) -> None:
    (tmp_path / "in").mkdir()
    for src in (f"{nginx_server.url}/", nginx_server.url):
        for dest in (str(tmp_path / "in"), str(tmp_path / "in") + "/"):
            p = ferry("transfer", src, dest)
            assert p.returncode == 1
            [line] = p.stderr.splitlines()
            assert f"SRC {src.rstrip('/')}" in line and "has no file name to keep there" in line
    assert os.listdir(tmp_path / "in") == []


def test_relative_paths_and_file_urls_into_a_directory(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"A")
    (tmp_path / "d").mkdir()
    assert ferry("transfer", "a.txt", "d", cwd=tmp_path).returncode == 0
    assert ferry("transfer", "file:a.txt", "file:e/", cwd=tmp_path).returncode == 0
    assert (tmp_path / "d" / "a.txt").read_bytes() == b"A"
    assert (tmp_path / "e" / "a.txt").read_bytes() == b"A"


# -- the list on stdin ----------------------------------------------------------


def test_file_dash_reads_the_list_from_stdin(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"A")
    lst = [entry("a", [(str(tmp_path / "a"), 1)], f"file://{tmp_path}/b")]
    p = ferry("transfer", "-f", "-", stdin=json.dumps(lst))
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "b").read_bytes() == b"A"


# -- one JSON document on stdout, whatever happens ----------------------------------


def _report(stdout: str) -> dict[str, object]:
    report = json.loads(stdout)  # one document, nothing else on stdout
    assert set(report) >= {"ok", "summary", "transfers"}
    return report


@pytest.mark.parametrize(
    ("args", "stdin", "said"),
    [
        (["--sha256", "zz", "a", "b"], None, "--sha256: 'zz' is not a sha256"),
        (["a"], None, "SRC DEST needs both"),
        ([], "[{", "malformed JSON"),
        (["-f", "/nonexistent/list.json"], None, "cannot read transfer list"),
        (["--tmpdir", "/nonexistent/tmp", "a", "b"], None, "--tmpdir /nonexistent/tmp: not a"),
    ],
)
def test_bad_input_with_json_gives_the_same_document_shape(
    args: list[str], stdin: str | None, said: str, tmp_path: Path
) -> None:
    p = ferry("transfer", "--json", *args, stdin=stdin, cwd=tmp_path)
    assert p.returncode == 1
    report = _report(p.stdout)
    assert report["ok"] is False and report["transfers"] == []
    assert report["summary"]["transfers"] == 0 and report["summary"]["failed"] == 0
    assert said in report["error"] and report["error_type"] == "ConfigError"


def test_an_unwritable_meta_file_still_reports_the_transfers(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"abc")
    lst = [entry("f.a", [(str(tmp_path / "a"), 1)], f"file://{tmp_path}/out/f.a")]
    meta = tmp_path / "no-such-dir" / "stage.meta"
    p = ferry("transfer", "--json", "--meta", str(meta), stdin=json.dumps(lst))
    assert p.returncode == 1
    report = _report(p.stdout)
    assert report["ok"] is False
    assert f"--meta {meta}: No such file or directory" in report["error"]
    [t] = report["transfers"]
    assert t["ok"] and t["sha256"] == f"sha256:{sha(b'abc')}"
    assert "Stats: 1 transfer(s), 1 succeeded" in p.stderr
    assert f"--meta {meta}" in p.stderr and ".meta-" not in p.stderr
    assert not meta.parent.exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_still_prints_its_json_document(
    signum: int, fault_server: FaultServer, tmp_path: Path
) -> None:
    route = fault_server.add(f"/slow-{signum}", b"x" * 1000, delay=20)
    dest = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ferry.planner.cli", "transfer", "--json"]
        + [f"{fault_server.url}/slow-{signum}", str(dest)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while route.count == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # the transfer is under way: the request reached the server
        assert route.count > 0
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == (1 if signum == signal.SIGINT else -signal.SIGTERM)
    assert f"Exiting due to signal {signum}" in err
    report = _report(out)
    assert report["ok"] is False and report["error_type"] == "Interrupted"
    assert f"signal {signum}" in report["error"]
    assert os.listdir(tmp_path) == []


def test_an_interrupt_does_not_wait_for_the_running_transfers(
    fault_server: FaultServer, tmp_path: Path
) -> None:
    routes = [fault_server.add(f"/parallel-{i}", b"y" * 1000, delay=15) for i in range(3)]
    lst = [
        entry(f"p{i}", [(f"{fault_server.url}/parallel-{i}", 1)], f"file://{tmp_path}/out/p{i}")
        for i in range(3)
    ]
    (tmp_path / "list.json").write_text(json.dumps(lst))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ferry.planner.cli", "transfer", "-n", "3", "-f", "list.json"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while any(r.count == 0 for r in routes) and time.monotonic() < deadline:
            time.sleep(0.05)  # every transfer is under way on its own thread
        assert all(r.count > 0 for r in routes)
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=30)
        waited = time.monotonic() - t0
    finally:
        proc.kill()
    assert proc.returncode == 1 and "Exiting due to signal 2" in err
    assert waited < 5, f"the interrupt waited {waited:.1f} s for the running transfers"
    time.sleep(0.5)
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


# -- what a person reads ---------------------------------------------------------


def test_a_transient_failure_in_the_last_round_does_not_promise_a_retry(tmp_path: Path) -> None:
    src = f"http://127.0.0.1:{free_port()}/x"  # nothing listens: connection refused
    p = ferry("transfer", "-m", "2", "--backoff", "0", src, str(tmp_path / "x"))
    assert p.returncode == 1
    tries = [ln for ln in p.stderr.splitlines() if "WARNING" in ln]
    assert len(tries) == 2
    assert "try 1 from" in tries[0] and "(will retry)" in tries[0]
    assert "try 2 from" in tries[1] and "(transient, no rounds left)" in tries[1]


def test_progress_bar_on_a_terminal_prints_names_with_brackets_verbatim(tmp_path: Path) -> None:
    (tmp_path / "ok[1].dat").write_bytes(b"fine")
    lst = [
        entry("good", [(str(tmp_path / "ok[1].dat"), 1)], f"file://{tmp_path}/got"),
        entry("bad", [(str(tmp_path / "x[/y]"), 1)], f"file://{tmp_path}/[bold]out"),
    ]
    (tmp_path / "list.json").write_text(json.dumps(lst))
    code, out = _ferry_on_a_terminal("transfer", "-m", "1", "-f", "list.json", cwd=tmp_path)
    assert code == 1, out
    assert "Traceback" not in out and "MarkupError" not in out
    assert "━" in out and "2/2" in out  # rich's bar, over files
    assert "try 1 from" in out and "x[/y]" in out and "(permanent)" in out
    assert "Stats: 2 transfer(s), 1 succeeded, 1 failed" in out
    assert (tmp_path / "got").read_bytes() == b"fine"
    assert not (tmp_path / "[bold]out").exists()


def test_plain_log_lines_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"A")
    p = ferry("transfer", str(tmp_path / "a"), str(tmp_path / "b"))
    assert p.returncode == 0
    assert "━" not in p.stderr and "\x1b[" not in p.stderr
    assert "INFO:  " in p.stderr and "All transfers completed successfully." in p.stderr


def test_standalone_json_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    lst = []
    for i in range(300):  # a report far larger than a pipe's buffer
        (tmp_path / f"f{i}").write_bytes(b"x")
        lst.append(entry(f"f{i}", [(str(tmp_path / f"f{i}"), 1)], f"file://{tmp_path}/o/f{i}"))
    (tmp_path / "list.json").write_text(json.dumps(lst))
    with open(tmp_path / "stderr", "wb") as stderr:  # not a pipe nobody reads while we wait
        proc = subprocess.Popen(
            [sys.executable, "-m", "ferry.worker.transfer_cli", "--json", "-f", "list.json"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    assert proc.stdout is not None
    try:
        assert proc.stdout.read(10).startswith(b"{")
        proc.stdout.close()  # as `| head -c 10` does
        assert proc.wait(timeout=60) == 141
    finally:
        proc.kill()
    err = (tmp_path / "stderr").read_text()
    assert "Traceback" not in err and "BrokenPipeError" not in err
    assert "Stats: 300 transfer(s), 300 succeeded" in err


def test_a_percent_sign_in_a_plain_path_is_part_of_the_name(tmp_path: Path) -> None:
    (tmp_path / "a%41.txt").write_bytes(b"pct")
    (tmp_path / "aA.txt").write_bytes(b"other")
    assert ferry("transfer", "a%41.txt", "d/", cwd=tmp_path).returncode == 0
    assert ferry("transfer", "a%41.txt", "b%20c.txt", cwd=tmp_path).returncode == 0
    assert (tmp_path / "d" / "a%41.txt").read_bytes() == b"pct"
    assert (tmp_path / "b%20c.txt").read_bytes() == b"pct"
    assert not (tmp_path / "d" / "aA.txt").exists() and not (tmp_path / "b c.txt").exists()


def test_a_url_decoded_name_is_kept_as_is_in_a_directory(
    nginx_server: NginxServer, tmp_path: Path
) -> None:
    (nginx_server.root / "x%41 y.txt").write_bytes(b"served")
    p = ferry("transfer", f"{nginx_server.url}/x%2541%20y.txt", str(tmp_path) + "/")
    assert p.returncode == 0, p.stderr
    assert os.listdir(tmp_path) == ["x%41 y.txt"]
    assert (tmp_path / "x%41 y.txt").read_bytes() == b"served"
