"""Helpers shared by the BufferWriter tests (tests/test_buffer_*.py)."""

import sqlite3


def rows(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT p.id, p.state, p.error, b.payload FROM payloads p "
                            "JOIN payload_bodies b ON b.id = p.id ORDER BY p.id").fetchall()
    finally:
        conn.close()
