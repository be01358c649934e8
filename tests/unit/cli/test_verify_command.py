"""`lmpipe verify [STAGE]`: every byte of every artifact against its manifest; a corrupt one is named and withdrawn."""

from __future__ import annotations

import os

from lmpipe.cli.main import main
from lmpipe.store.manifest import is_complete
from lmpipe.store.publish import building


def publish(root, stage: str, key: str, payload: bytes):
    with building(root / stage / key, stage, {}) as scratch:
        (scratch / "dataset").mkdir()
        (scratch / "dataset" / "part.arrow").write_bytes(payload)
    return root / stage / key


def test_verify_reads_every_byte_and_withdraws_what_does_not_match(tmp_path, capsys):
    root = tmp_path / "artifacts"
    good = publish(root, "flatten", "aaa", b"0123456789")
    bad = publish(root, "tokenize", "bbb", b"abcdefghij")
    (root / ".locks").mkdir()  # not an artifact: skipped
    part = bad / "dataset" / "part.arrow"
    stat = part.stat()
    part.write_bytes(b"abcdefghiX")  # same size...
    os.utime(part, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ...and time: only reading the bytes finds it
    assert is_complete(bad)

    assert main(["verify", "--set", f"artifacts.root={root}"]) == 1
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith(("flatten", "tokenize"))}
    assert rows["flatten"].split()[1:5] == ["aaa", "1", "0.0", "ok"]
    assert "CORRUPT: dataset/part.arrow does not match its checksum" in out
    assert "2 artifacts" in out and "1 corrupt (withdrawn; the next run rebuilds them)" in out
    assert not is_complete(bad) and is_complete(good)

    assert main(["verify", "flatten", "--set", f"artifacts.root={root}"]) == 0
    out = capsys.readouterr().out
    assert "1 artifacts" in out and "0 corrupt" in out and "tokenize" not in out


def test_verify_names_a_root_or_stage_that_is_not_there(tmp_path, capsys):
    assert main(["verify", "--set", f"artifacts.root={tmp_path / 'none'}"]) == 2
    assert "artifacts.root" in capsys.readouterr().err
    (tmp_path / "root").mkdir()
    assert main(["verify", "group", "--set", f"artifacts.root={tmp_path / 'root'}"]) == 2
