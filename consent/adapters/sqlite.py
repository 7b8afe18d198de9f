"""SQLite's recorder (the embedded default): the shared statements, in a transaction of the single writer."""

from __future__ import annotations

from consent.adapters.sql_recorder import SqlRecorder, audited_predicate


class SqliteRecorder(SqlRecorder):
    AUDITED = audited_predicate("json_extract(metadata, '$.actor')")
