"""The one-line message of a file that could not be written, in each of its shapes."""

from __future__ import annotations

import errno

from ncollapse.errors import write_error


def _msg(path, code, **kw) -> str:
    return str(write_error(path, OSError(code, "why"), **kw))


def test_a_fix_and_somewhere_else_are_alternatives():
    assert _msg("/o/x", errno.ENOSPC, elsewhere="give --out another folder") == (
        "cannot write /o/x (why): the disk is full: free some space there; or give --out "
        "another folder (files written before are intact)"
    )


def test_without_a_fix_somewhere_else_stands_alone():
    assert _msg("/o/x", errno.ENOENT, elsewhere="give --out another folder") == (
        "cannot write /o/x (why); give --out another folder (files written before are intact)"
    )


def test_a_run_directory_goes_on_from_its_checkpoint(tmp_path):
    for name in ("checkpoint.pt", "config.yaml"):
        (tmp_path / name).write_text("")
    msg = _msg(tmp_path / "metrics.jsonl", errno.EFBIG)
    assert msg == (
        f"cannot write {tmp_path / 'metrics.jsonl'} (why): the file-size limit is reached "
        f"(ulimit -f): raise it; then `ncollapse train --resume {tmp_path}` goes on from its "
        "last checkpoint (in a sweep: rerun the sweep) (files written before are intact)"
    )


def test_anything_else_is_run_again(tmp_path):
    assert _msg(tmp_path / "plot.png", errno.EROFS) == (
        f"cannot write {tmp_path / 'plot.png'} (why): the file system is read-only: choose a "
        "writable place; then run the same command again (files written before are intact)"
    )
