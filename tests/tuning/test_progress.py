"""The live progress line: one carriage-returned line on a terminal, a line per finished trial in logs."""

import io

from tasks.tuning.progress import StudyProgress, TerminalLine


def p(finished, running, best=None):
    return StudyProgress(
        total=3,
        finished=finished,
        running=running,
        paused=1,
        stopped_early=finished // 2,
        errored=0,
        epochs=finished * 3,
        best=best,
        metric="val_accuracy",
        elapsed_s=2.0,
    )


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_terminal_line_rewrites_one_line_on_a_tty():
    out = Tty()
    line = TerminalLine(out)
    for snap in (p(0, 2), p(1, 2, 0.5), p(3, 0, 0.9)):
        line(snap)
    text = out.getvalue()
    assert text.count("\r\033[K") == 3 and text.endswith("\n") and text.count("\n") == 1
    assert "3/3 trials finished (1 stopped early), 0 running, 1 paused, 9 epochs, best val_accuracy 0.9000" in text


def test_terminal_line_prints_a_line_per_finished_trial_in_logs():
    out = io.StringIO()
    line = TerminalLine(out)
    for snap in (p(0, 2), p(0, 2, 0.4), p(1, 2, 0.5), p(1, 1, 0.6), p(3, 0, 0.9)):
        line(snap)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and "\r" not in out.getvalue()
    assert lines[0].startswith("tuning: 0/3") and "best val_accuracy -" in lines[0]
    assert lines[-1].startswith("tuning: 3/3")
