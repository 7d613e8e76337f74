"""Pegasus's plain-text "File" replica catalog (rc.txt): read by ferry plan and run
like replicas.yml, chosen by the properties or recognised by its content."""

from __future__ import annotations

from pathlib import Path

import pytest
from Pegasus.api import File, Job, Properties, Transformation, TransformationCatalog, Workflow

from ferry.planner.catalogs import replicas_for
from ferry.planner.rctext import looks_like_file_rc, read_file_rc
from ferry.plugins.errors import ConfigError
from tests.planner.helpers import ferry, records, script, sha, specs

SUM = "ab" * 32


def test_lines_quotes_attributes_regex_and_checksums() -> None:
    rc = read_file_rc(
        "# LFN PFN attributes\n"
        "\n"
        'f.a   file:///data/f.a   site="local" priority="5"\n'
        "f.a   http://127.0.0.1/f.a   site=web\n"
        '"my file"  "file:///data/my file"  pool="old"\n'
        f'f.c  file:///data/f.c  checksum.type="sha256" checksum.value="{SUM.upper()}"\n'
        'f\\.(\\d+)\\.in  file:///in/[1]/f.[1].in  site="local" regex="true"\n'
        'f.d  file:///d  site="local" owner="me"\n',
        "rc.txt",
    )
    a = replicas_for(rc, "f.a")
    assert [(r.site, r.pfn, r.priority) for r in a] == [
        ("local", "file:///data/f.a", 5),
        ("web", "http://127.0.0.1/f.a", None),
    ]
    [spaced] = replicas_for(rc, "my file")
    assert (spaced.site, spaced.pfn) == ("old", "file:///data/my file")
    [c] = replicas_for(rc, "f.c")
    assert c.sha256 == SUM and rc.checksums["f.c"] == SUM and c.site == "local"
    [rx] = replicas_for(rc, "f.12.in")
    assert rx.pfn == "file:///in/12/f.12.in"
    assert rc.metadata["f.d"] == {"owner": "me"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("onlyonetoken", "rc.txt:2: expected 'LFN PFN"),
        ('f.a file:///a site="local" junk', "rc.txt:2: replica 'f.a': attributes must be"),
        ('f.a file:///a priority="high"', "priority 'high' is not a whole number"),
        ('f.a file:///a checksum.type="md5" checksum.value="00"', "only checksum.type"),
        ('f.a file:///a checksum.type="sha256" checksum.value="00"', "not 64 hex digits"),
        ('f(.a file:///a regex="true"', "does not compile"),
    ],
)
def test_bad_lines_name_the_file_and_line(line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        read_file_rc(f"# header\n{line}\n", "rc.txt")
    assert message in str(info.value)


def test_format_detection() -> None:
    assert looks_like_file_rc('# c\nf.a file:///a site="local"\n')
    assert not looks_like_file_rc('pegasus: "5.0.4"\nreplicas: []\n')
    assert not looks_like_file_rc("replicas:\n  - lfn: f.a\n")
    assert not looks_like_file_rc('---\npegasus: "5.0"\n')
    assert not looks_like_file_rc('{"pegasus": "5.0", "replicas": []}')
    assert not looks_like_file_rc("# only comments\n")


def _workflow(tmp: Path) -> None:
    tc = TransformationCatalog()
    tc.add_transformations(
        Transformation(
            "upper",
            site="local",
            pfn=str(script(tmp / "upper.py", "import sys\n"
                           "open(sys.argv[2], 'w').write(open(sys.argv[1]).read().upper())\n")),
            is_stageable=False,
        )
    )
    tc.write(str(tmp / "transformations.yml"))
    inp, out = File("words.txt"), File("upper.txt")
    wf = Workflow("rc-text")
    wf.add_jobs(Job("upper").add_args(inp, out).add_inputs(inp).add_outputs(out))
    wf.write(str(tmp / "wf.yml"))


@pytest.mark.parametrize("named", ["default name", "named file"])
def test_ferry_run_with_an_rc_txt(tmp_path: Path, named: str) -> None:
    data = b"hello from rc.txt\n"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "words.txt").write_bytes(data)
    _workflow(tmp_path)
    props = Properties()
    props["pegasus.catalog.replica"] = "File"
    rc_name = "rc.txt" if named == "default name" else "catalogs/replicas.txt"
    if named != "default name":
        props["pegasus.catalog.replica.file"] = rc_name
        (tmp_path / "catalogs").mkdir()
    props.write(str(tmp_path / "pegasus.properties"))
    (tmp_path / rc_name).write_text(
        "# written by hand, as for pegasus-plan\n"
        f'words.txt  file://{tmp_path}/data/words.txt  site="local"'
        f' checksum.type="sha256" checksum.value="{sha(data)}"\n'
    )
    p = ferry("run", "wf.yml", "--dir", "run", "--output-dir", "out", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "out" / "upper.txt").read_bytes() == data.upper()
    [spec] = specs(tmp_path / "run").values()
    [inp] = spec.inputs
    assert inp.sha256 == sha(data)
    assert [s.url for s in inp.sources] == [f"file://{tmp_path}/data/words.txt"]
    [rec] = records(tmp_path / "run", spec.id)
    assert rec["status"] == "succeeded"


def test_a_bad_rc_txt_stops_the_plan_with_its_line(tmp_path: Path) -> None:
    _workflow(tmp_path)
    (tmp_path / "rc.txt").write_text('words.txt file:///x site="local" priority="x"\n')
    props = Properties()
    props["pegasus.catalog.replica"] = "File"
    props.write(str(tmp_path / "pegasus.properties"))
    p = ferry("plan", "wf.yml", "--dir", "run", cwd=tmp_path)
    assert p.returncode != 0
    assert "rc.txt:1:" in p.stderr and "priority 'x'" in p.stderr
    assert not (tmp_path / "run" / "plan.json").exists()


def test_checksum_value_without_a_type_is_a_sha256() -> None:
    # Pegasus checks checksum.value whatever checksum.type says, if anything
    rc = read_file_rc(f'f.a  file:///data/f.a  site="local" checksum.value="{SUM}"\n', "rc.txt")
    [a] = replicas_for(rc, "f.a")
    assert a.sha256 == SUM and rc.checksums["f.a"] == SUM
