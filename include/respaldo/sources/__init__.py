"""Source kinds. Each module registers one :class:`~respaldo.sources.base.Source` here."""

from __future__ import annotations

from respaldo.sources.base import CopyResult, Source, TargetBase
from respaldo.sources.files import FilesSource
from respaldo.sources.mysql import MysqlSource
from respaldo.sources.portal import PortalSource
from respaldo.sources.postgres import PostgresSource
from respaldo.sources.vm import VmSource

SOURCES: dict[str, Source] = {
    source.kind: source
    for source in (
        PostgresSource(),
        FilesSource(),
        VmSource(),
        PortalSource(),
        MysqlSource(),
    )
}


def source_for(kind: str) -> Source:
    """The source that handles ``kind`` (the inventory has already checked it exists)."""
    return SOURCES[kind]


__all__ = ["SOURCES", "CopyResult", "Source", "TargetBase", "source_for"]
