"""A failed container's termination message made one line, and the error label cut from it."""

from __future__ import annotations

from exporters.pipeline_exporter import messages as m


def test_multi_line_message_with_control_characters_is_one_line() -> None:
    raw = (
        'Traceback (most recent call last):\r\n  File "t.py", line 3\n'
        "\tFloatingPointError:\x1b[31m loss\x00 diverged\u2028end \n"
    )
    want = 'Traceback (most recent call last): File "t.py", line 3 FloatingPointError: [31m loss diverged end'
    assert m.one_line(raw) == want


def test_no_message_is_empty_never_none() -> None:
    assert m.one_line(None) == ""
    assert m.one_line("") == ""
    assert m.one_line(" \n\t ") == ""
    assert m.error_label(None) == ""


def test_error_label_is_cut_at_200_characters() -> None:
    assert m.ERROR_LABEL_MAX == 200
    exact = "e" * 200
    assert m.error_label(exact) == exact
    longer = "e" * 199 + "fg"
    assert m.error_label(longer) == "e" * 199 + "…"
    assert len(m.error_label("x" * 10_000)) == 200


def test_unicode_text_is_kept() -> None:
    assert m.one_line("Verlust divergiert: é → ∞") == "Verlust divergiert: é → ∞"
