"""The shell commands of deploy/README.md's production checklist, for the tests that run them.

Commands are read from the README itself (``sh`` code blocks, backslash
continuations joined), so a test runs what an operator would copy.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "deploy" / "README.md"
_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)


def shell_lines() -> list[str]:
    """Every command line of the README's ``sh`` blocks, continuations joined."""
    lines: list[str] = []
    for block in _BLOCK.findall(README.read_text()):
        lines.extend(line.strip() for line in block.replace("\\\n", " ").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def command(prefix: str) -> str:
    """The one command line starting with ``prefix``."""
    [line] = [line for line in shell_lines() if line.startswith(prefix)]
    return line


@dataclass(frozen=True)
class TopicSpec:
    """One ``kafka-topics.sh --create`` line."""

    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)
    options: frozenset[str] = frozenset()


def topic_specs() -> list[TopicSpec]:
    """The topics the checklist creates, as its ``kafka-topics.sh --create`` lines say."""
    specs: list[TopicSpec] = []
    for line in shell_lines():
        if not line.startswith("kafka-topics.sh"):
            continue
        words = shlex.split(line, comments=True)
        if "--create" not in words:
            continue
        values: dict[str, str] = {}
        config: dict[str, str] = {}
        options: set[str] = set()
        rest = iter(words[1:])
        for word in rest:
            if word in {"--create", "--if-not-exists"}:
                options.add(word)
            elif word == "--config":
                key, value = next(rest).split("=", 1)
                config[key] = value
            else:
                values[word] = next(rest)
        options.update(values)
        specs.append(
            TopicSpec(
                name=values["--topic"],
                partitions=int(values["--partitions"]),
                replication_factor=int(values["--replication-factor"]),
                config=config,
                options=frozenset(options),
            )
        )
    return specs
