"""Test-session instrumentation: count every gradient check that asserted success and report
the worst relative error seen, at the end of the pytest run."""

from __future__ import annotations

from cnn_lib.gradcheck import GradCheckReport

_seen: list[float] = []
_original_assert_ok = GradCheckReport.assert_ok


def _assert_ok_and_record(self: GradCheckReport) -> None:
    _original_assert_ok(self)
    _seen.append(self.max_error)


GradCheckReport.assert_ok = _assert_ok_and_record


def pytest_terminal_summary(terminalreporter):
    if _seen:
        terminalreporter.write_line(
            f"gradient checks: {len(_seen)} passed layer/network checks (float64), "
            f"worst relative error {max(_seen):.2e}")
