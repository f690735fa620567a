"""Log lines: names chosen by clients cannot forge lines; bounded-rate records."""

from __future__ import annotations

import logging

from trioroom.log import BoundedLog, JsonFormatter, TextFormatter


def _record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("trioroom.test", logging.INFO, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


def test_text_log_escapes_control_characters_in_message_and_context() -> None:
    formatter = TextFormatter("%(levelname)s - %(message)s")
    evil = "lobby\nINFO - admin logged in\x00\u2028"
    line = formatter.format(_record("joined %s", evil, room=evil, conn_id="c1"))
    assert "\n" not in line and "\x00" not in line and "\u2028" not in line
    assert line == (
        "INFO [conn_id=c1 room=lobby\\nINFO - admin logged in\\x00\\u2028] - "
        "joined lobby\\nINFO - admin logged in\\x00\\u2028"
    )


def test_json_log_keeps_names_exact() -> None:
    import json

    data = json.loads(JsonFormatter().format(_record("joined", room="a\nb")))
    assert data["room"] == "a\nb"


def test_bounded_log_writes_one_record_per_key_and_interval(caplog) -> None:
    now = [0.0]
    log = BoundedLog(logging.getLogger("trioroom.test"), interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="trioroom.test"):
        written = [log.log(logging.INFO, "rate", "dropped %d", i) for i in range(5)]
        assert log.log(logging.INFO, "other", "another reason")
        now[0] = 10.5
        assert log.log(logging.INFO, "rate", "dropped %d", 5)
    assert written == [True, False, False, False, False]
    assert [r.getMessage() for r in caplog.records] == [
        "dropped 0",
        "another reason",
        "dropped 5 (4 more like this in the last 10s not logged)",
    ]
