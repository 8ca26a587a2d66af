"""Helpers shared by the admin command tests (tests/test_admin_*.py)."""


def one_line(text):
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]
