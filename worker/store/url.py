"""Store URLs: ``chdb://`` and ``clickhouse://`` parsed strictly, and shown without secrets.

``chdb:///abs/dir`` or ``chdb://./relative/dir`` (``?database=NAME``) names the
embedded engine's data directory; ``clickhouse://user:pass@host:port/db``
(``?secure=1`` or ``clickhouses://`` for TLS, ``&http_port=N`` for Arrow
inserts over HTTP) a server. Pure: no connection is made here
(:func:`worker.store.connect.open_gateway` does that).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

from worker.store.errors import StoreError
from worker.store.gateway import DEFAULT_DATABASE, check_identifier

REDACTED = "***"
"""What a secret (a password in a URL or a setting) is shown as."""


@dataclass(frozen=True, slots=True)
class ChdbLocation:
    """A parsed ``chdb://`` URL: the data directory and the database."""

    path: Path
    database: str


@dataclass(frozen=True, slots=True)
class NativeLocation:
    """A parsed ``clickhouse://`` URL."""

    host: str
    port: int
    user: str
    password: str
    database: str
    secure: bool
    http_port: int | None = None
    """The server's HTTP port (``?http_port=N``): inserts then go there as Arrow."""


def redact_url(url: str) -> str:
    """``scheme://user:***@host/...``: the password of a URL is never shown."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    # Rebuild from the raw netloc: ``parts.port`` raises on a malformed port.
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username}:{REDACTED}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _shown(url: str) -> str:
    """``url`` safe to show: password redacted, or only the scheme when unparseable."""
    try:
        return redact_url(url)
    except ValueError:
        return url.partition("://")[0] + "://***" if "@" in url else url


def _bad_url(url: str, why: str) -> StoreError:
    return StoreError(
        f"invalid store URL {_shown(url)!r} ({why}): expected chdb:///path/to/dir, "
        "chdb://./relative/dir or clickhouse://user:pass@host:9000/db[?secure=1&http_port=8123]"
    )


#: Query parameters each scheme understands; any other one is a typo (``?databse=``).
_URL_PARAMETERS: dict[str, frozenset[str]] = {
    "chdb": frozenset({"database"}),
    "clickhouse": frozenset({"secure", "http_port"}),
    "clickhouses": frozenset({"secure", "http_port"}),
}
_SECURE_VALUES = frozenset({"0", "1", "false", "true"})


def _http_port(url: str, text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise _bad_url(url, f"http_port must be a port number 1..65535, got {text!r}")
    return int(text)


def parse_store_url(url: str) -> ChdbLocation | NativeLocation:
    """Parse a store URL; raise :class:`StoreError` naming the expected forms.

    Strict: a scheme without ``//``, an unknown query parameter or a bad
    ``secure`` value is an error, never silently ignored.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _bad_url(url, str(exc)) from None
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    if parts.scheme in _URL_PARAMETERS:
        if not url.startswith(f"{parts.scheme}://"):
            # chdb:/./store would silently mean /store.
            raise _bad_url(url, f"write {parts.scheme}:// (two slashes) before the path or host")
        unknown = sorted(
            set(parse_qs(parts.query, keep_blank_values=True)) - _URL_PARAMETERS[parts.scheme]
        )
        if unknown:
            known = ", ".join(sorted(_URL_PARAMETERS[parts.scheme])) or "none"
            raise _bad_url(url, f"unknown parameter {unknown[0]!r}; known: {known}")
        if query.get("secure", "0") not in _SECURE_VALUES:
            raise _bad_url(url, "secure must be one of 0, 1, false, true")
    if parts.scheme == "chdb":
        if parts.netloc not in ("", ".", "localhost"):
            raise _bad_url(url, "chdb takes a path, not a host")
        raw = parts.path if parts.netloc != "." else "." + parts.path
        if raw in ("", "/", "."):
            raise _bad_url(url, "no directory")
        database = check_identifier(query.get("database", DEFAULT_DATABASE))
        return ChdbLocation(Path(unquote(raw)), database)
    if parts.scheme in ("clickhouse", "clickhouses"):
        if not parts.hostname:
            raise _bad_url(url, "no host")
        secure = parts.scheme == "clickhouses" or query.get("secure", "0") in ("1", "true")
        database = check_identifier(unquote(parts.path.strip("/")) or DEFAULT_DATABASE)
        return NativeLocation(
            host=parts.hostname,
            port=port or (9440 if secure else 9000),
            user=unquote(parts.username or "default"),
            password=unquote(parts.password or ""),
            database=database,
            secure=secure,
            http_port=_http_port(url, query.get("http_port")),
        )
    raise _bad_url(url, f"unknown scheme {parts.scheme!r}" if parts.scheme else "no scheme")
