"""Type stubs of the compiled batch core (``core/``, built by maturin)."""

def core_version() -> str: ...
def decode_batch(
    values: list[bytes | None],
    topics: list[str],
    partitions: list[int],
    offsets: list[int],
    timestamps_ms: list[int | None],
    now_us: int,
    limits: tuple[int, int, int, int, int],
) -> tuple[list[int], list[tuple[int, str]], dict[str, tuple[bytes, bytes]], bytes]: ...
def fixed_point_ops(ops: list[tuple[str, str, str]]) -> list[str | None]: ...
