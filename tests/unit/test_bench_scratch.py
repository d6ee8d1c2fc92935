"""Benchmark data directories: kept under one scratch root until it is deleted."""

from __future__ import annotations

import os

from worker.benchmarks.child import SCRATCH_ROOT_VARIABLE, scratch_directory, scratch_root


def test_without_a_root_the_directory_is_deleted_on_exit() -> None:
    assert SCRATCH_ROOT_VARIABLE not in os.environ
    with scratch_directory("alone-") as directory:
        (directory / "part").write_text("x")
    assert not directory.exists()


def test_directories_outlive_their_benchmark_until_the_root_is_deleted() -> None:
    with scratch_root() as root:
        assert os.environ[SCRATCH_ROOT_VARIABLE] == str(root)
        with scratch_directory("first-") as first:
            (first / "part").write_text("x")
        with scratch_directory("second-") as second:
            assert second != first and second.parent == root
        assert (first / "part").read_text() == "x"
    assert not root.exists()
    assert SCRATCH_ROOT_VARIABLE not in os.environ
