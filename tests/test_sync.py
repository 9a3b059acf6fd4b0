"""`sync` between local folders and the three emulated clouds: idempotence, --delete, --dry-run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.cloud_stores import emulated_store, local_store
from toolkit.storage.sync import sync


def _tree(root: Path, files: int = 12) -> dict[str, bytes]:
    contents = {f"dir{i % 3}/file{i:02d}.bin": os.urandom(1000 + i) for i in range(files)}
    for key, data in contents.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    return contents


@pytest.mark.parametrize("kind", ["s3", "gcs", "azure"])
def test_second_sync_of_an_unchanged_tree_copies_nothing(emulators, tmp_path: Path, kind: str) -> None:
    contents = _tree(tmp_path / "src")
    source, target = local_store(tmp_path / "src"), emulated_store(emulators, kind)
    first = sync(source, target)
    assert (len(first.copied), first.bytes_copied, first.ok) == (12, sum(map(len, contents.values())), True)
    second = sync(source, target)
    assert (second.copied, len(second.skipped), second.bytes_copied) == ([], 12, 0)
    (tmp_path / "src" / "dir0/file00.bin").write_bytes(b"changed, same length?" * 3)
    third = sync(source, target)
    assert third.copied == ["dir0/file00.bin"]
    back = local_store(tmp_path / "back")
    sync(target, back)
    for key in contents:
        assert (tmp_path / "back" / key).read_bytes() == (tmp_path / "src" / key).read_bytes()


def test_delete_and_dry_run(emulators, tmp_path: Path) -> None:
    _tree(tmp_path / "src", files=6)
    source, target = local_store(tmp_path / "src"), emulated_store(emulators, "gcs")
    sync(source, target)
    (tmp_path / "src" / "dir1/file01.bin").unlink()
    (tmp_path / "src" / "new.bin").write_bytes(b"new")
    preview = sync(source, target, delete=True, dry_run=True)
    assert (preview.copied, preview.deleted) == (["new.bin"], ["dir1/file01.bin"])
    assert target.exists("dir1/file01.bin") and not target.exists("new.bin"), "a dry run changes nothing"
    without_delete = sync(source, target)
    assert without_delete.deleted == [] and target.exists("dir1/file01.bin")
    done = sync(source, target, delete=True)
    assert done.deleted == ["dir1/file01.bin"] and not target.exists("dir1/file01.bin")
    assert sorted(info.key for info in target.list()) == sorted(info.key for info in source.list())


def test_cloud_to_cloud_sync_keeps_bytes_identical(emulators, tmp_path: Path) -> None:
    contents = _tree(tmp_path / "src", files=4)
    s3, azure = emulated_store(emulators, "s3"), emulated_store(emulators, "azure")
    sync(local_store(tmp_path / "src"), s3)
    copied = sync(s3, azure)
    assert len(copied.copied) == 4
    assert sync(s3, azure).copied == [], "hashes carried across clouds make the re-sync a no-op"
    for key, data in contents.items():
        assert azure.get(key) == data


def test_sync_command_prints_a_summary_and_json(mct, tmp_path: Path) -> None:
    _tree(tmp_path / "src", files=3)
    source, target = str(tmp_path / "src"), str(tmp_path / "dst")
    (tmp_path / "dst").mkdir()
    first = mct("sync", source, target)
    assert first.exit_code == 0, first.output
    assert "copied 3" in first.stdout
    second = json.loads(mct("sync", source, target, "--json").stdout)
    assert (second["copied"], second["skipped"], second["bytes_copied"]) == (0, 3, 0)


def test_a_file_edited_in_place_after_a_put_is_synced_again(emulators, tmp_path: Path) -> None:
    source = local_store(tmp_path / "src")
    source.put("model.bin", b"A" * 4096)
    target = emulated_store(emulators, "azure")
    assert sync(source, target).copied == ["model.bin"]
    with (tmp_path / "src" / "model.bin").open("r+b") as stream:  # same size, new content, same inode
        stream.write(b"B" * 4096)
    assert source.head("model.bin").sha256 is None, "the recorded hash no longer describes the file"
    assert sync(source, target).copied == ["model.bin"]
    assert target.get("model.bin") == b"B" * 4096
