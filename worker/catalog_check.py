"""``events-worker catalog check FILE``: validate a catalog file as ``run usage`` does.

Exit 0 with a one-screen summary on stdout, or exit 2 with the located
errors as one line on stderr (the contract deploy scripts rely on).
"""

from __future__ import annotations

from typing import TextIO

from worker.domain.catalog import load_catalog_file
from worker.domain.catalog_index import CatalogIndex
from worker.domain.catalog_summary import summarize_catalog
from worker.ops.settings import WorkerSettings
from worker.stream.catalog_guard import refuse_empty_file


def check_catalog_file(path: str, settings: WorkerSettings, out: TextIO) -> None:
    """Print the summary of a valid file; raise ``CatalogError`` (one line) otherwise.

    Exactly the worker's checks: strict parsing, references, ratable prices,
    and no empty catalog unless ``settings.allow_empty_catalog``.
    """
    documents = load_catalog_file(path)
    index = CatalogIndex(documents)
    if not settings.allow_empty_catalog:
        refuse_empty_file(index, path)
    for line in summarize_catalog(path, documents):
        print(line, file=out)
