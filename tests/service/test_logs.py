"""Log lines under journald and on a terminal; rate limits on repeated (per-packet) messages."""
from __future__ import annotations

import io
import logging
import os
from pathlib import Path

from passnat.service import logs


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _record(msg: str, *args: object, level: int = logging.WARNING, name: str = "passnat.nat") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_journal_stream_detection(tmp_path: Path) -> None:
    with open(tmp_path / "err", "w") as f:
        st = os.fstat(f.fileno())
        assert logs.under_journald(f, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not logs.under_journald(f, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})  # stderr redirected
        assert not logs.under_journald(f, {})
        assert not logs.under_journald(f, {"JOURNAL_STREAM": "garbage"})


def test_journal_lines_have_a_priority_and_no_timestamp() -> None:
    f = logs.JournalFormatter()
    assert f.format(_record("nat session is full: %s", "x")) == "<4>passnat.nat: nat session is full: x"
    assert f.format(_record("ok", level=logging.INFO, name="passnat.daemon")) == "<6>passnat.daemon: ok"
    assert f.format(_record("bad", level=logging.ERROR)).startswith("<3>")
    assert f.format(_record("dbg", level=logging.DEBUG)).startswith("<7>")
    try:
        raise ValueError("boom")
    except ValueError:
        import sys
        rec = logging.LogRecord("passnat.daemon", logging.ERROR, __file__, 1, "internal error", (), sys.exc_info())
    lines = f.format(rec).split("\n")
    assert len(lines) > 3 and all(line.startswith("<3>") for line in lines)  # the traceback keeps its priority


def test_setup_picks_the_format_from_the_stream(tmp_path: Path, monkeypatch: object) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        with open(tmp_path / "err", "w") as f:
            st = os.fstat(f.fileno())
            os.environ["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
            logs.setup("info", f)
            logging.getLogger("passnat.daemon").info("started")
            del os.environ["JOURNAL_STREAM"]
            logs.setup("info", f)
            logging.getLogger("passnat.daemon").info("again")
        text = (tmp_path / "err").read_text().splitlines()
        assert text[0] == "<6>passnat.daemon: started"
        assert text[1].endswith(" INFO passnat.daemon: again") and text[1][:4].isdigit()  # a timestamp
    finally:
        os.environ.pop("JOURNAL_STREAM", None)
        for h in root.handlers[:]:
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])


def test_rate_limit_groups_by_template_and_reports_suppressed() -> None:
    clock = Clock()
    rl = logs.RateLimit(burst=3, interval=10.0, clock=clock)
    assert all(rl.filter(_record(f"dropped 192.168.0.{i} -> 203.0.113.10 proto 6")) for i in range(5))  # not armed
    rl.arm()
    passed = [rl.filter(_record(f"nat session is full: dropped 192.168.0.{i} -> 203.0.113.10 proto 6"))
              for i in range(100)]
    assert passed.count(True) == 3
    assert rl.filter(_record("AH packet 192.168.0.1 -> 1.2.3.4 translated"))  # another template has its own budget
    clock.t += 10.0
    rec = _record("nat session is full: dropped 192.168.0.200 -> 203.0.113.10 proto 6")
    assert rl.filter(rec)
    assert rec.msg.endswith("[97 similar line(s) suppressed]")
    assert rl.take_suppressed() == 97 and rl.take_suppressed() == 0


def test_global_budget_and_bounded_groups() -> None:
    clock = Clock()
    rl = logs.RateLimit(burst=5, interval=10.0, global_burst=20, global_rate=1.0, max_groups=8, clock=clock)
    rl.arm()
    passed = sum(rl.filter(_record(f"message {chr(65 + i % 26)}{i // 26} unique")) for i in range(200))
    # letters are not masked: 200 templates; the global bucket lets 20 through
    assert passed == 20 and len(rl.groups) == 8
    clock.t += 5.0
    assert sum(rl.filter(_record(f"later {chr(65 + i)}")) for i in range(10)) == 5


def test_records_through_a_handler() -> None:
    stream = io.StringIO()
    h = logging.StreamHandler(stream)
    rl = logs.RateLimit(burst=2, interval=60.0, clock=Clock())
    rl.arm()
    h.addFilter(rl)
    lg = logging.getLogger("passnat.test.ratelimit")
    lg.addHandler(h)
    lg.propagate = False
    lg.setLevel(logging.INFO)  # whatever other tests did to the root logger's level
    disabled = logging.root.manager.disable
    logging.disable(logging.NOTSET)
    try:
        for i in range(50):
            lg.warning("another host (%s) announces %s", f"00:11:22:33:44:{i:02x}", "192.168.0.1")
    finally:
        logging.disable(disabled)
        lg.setLevel(logging.NOTSET)
        lg.removeHandler(h)
    assert len(stream.getvalue().splitlines()) == 2
