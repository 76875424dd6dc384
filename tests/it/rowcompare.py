"""Row-for-row comparison of what a reader returned with SQLite, shared by the reader scripts
(read_delta.py, read_spark.py): rows are compared as multisets of normalized values."""

import datetime
import json
import os
import sqlite3
import sys


def norm(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return ("b", bytes(v).hex())
    # A REAL column whose SQLite values are stored as integers reads back as a double.
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return ("v", int(v))
    return ("v", v)


def key(row):
    return json.dumps([norm(v) for v in row], default=str, sort_keys=True)


def quote(name):
    return '"' + name.replace('"', '""') + '"'


def as_timestamp(text):
    """SQLite's text as the timestamp a typed column must hold."""
    return None if text is None else datetime.datetime.fromisoformat(text)


def as_date(text):
    """SQLite's text as the date a typed column must hold (a non-midnight time stays text,
    so a date that lost its time would not compare equal)."""
    if text is None:
        return None
    t = datetime.datetime.fromisoformat(text)
    return t.date() if t.time() == datetime.time() else text


def sqlite_rows(db, table, columns, convert=None):
    """`SELECT columns FROM table` as sorted row keys; `convert` maps a column name to the
    function that turns its SQLite text into the typed value the reader returns."""
    convert = convert or {}
    fns = [convert.get(c, lambda v: v) for c in columns]
    select = ", ".join(quote(c) for c in columns)
    con = sqlite3.connect(db)
    rows = con.execute(f"select {select} from {quote(table)}")
    return sorted(key([f(v) for f, v in zip(fns, r)]) for r in rows)


def check(reader, rows, want):
    """Exit 1 naming the reader and a few differing rows unless `rows` equal `want`."""
    have = sorted(key(r) for r in rows)
    if have != want:
        missing = sorted(set(want) - set(have))[:3]
        extra = sorted(set(have) - set(want))[:3]
        print(
            f"{reader}: {len(have)} rows, SQLite {len(want)}; "
            f"missing {missing}, unexpected {extra}",
            file=sys.stderr,
        )
        sys.exit(1)
    return len(have)


def finish(code=0):
    """Exits with `code` once the answer is flushed, skipping the interpreter's teardown.

    pyarrow's (and deltalake's) worker threads can abort that teardown with "terminate called
    without an active exception" (apache/arrow#34314, delta-io/delta-rs#2184): a reader that
    printed its answer would still exit 134 now and then.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
