"""The run directory's worker files (journals, dialog tables): names and pruning."""

from __future__ import annotations

from pathlib import Path

from signaling.registry.runfiles import prune_files, writer_pid


def test_writer_pid_reads_the_name_of_its_kind_only() -> None:
    assert writer_pid("journal-123-abc", "journal-") == 123
    assert writer_pid("journal-123-abc", "dialogs-") is None
    assert writer_pid("journal-x1-abc", "journal-") is None
    assert writer_pid("journal-123", "journal-") is None  # no "-" after the pid


def test_prune_keeps_live_writers_and_needed_files(tmp_path: Path) -> None:
    files = {"k-1-a": b"KEEP", "k-2-a": b"GONE", "k-3-a": b"GONE", "k-4-a": b"K",
             "other-5-a": b"GONE"}
    for name, header in files.items():
        (tmp_path / name).write_bytes(header)
    removed = prune_files(str(tmp_path), "k-", 4, live={3},
                          needed=lambda header: header == b"KEEP")
    # 2: writer gone, not needed; 4: a short header (its writer died creating it);
    # 1 kept as needed, 3 kept as its writer lives, "other-" is not of this kind
    assert sorted(removed) == ["k-2-a", "k-4-a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k-1-a", "k-3-a", "other-5-a"]
