"""The demo (demo/run.py) runs end to end and verifies itself.

It runs in a subprocess with this interpreter because it configures Django
itself (settings.configure), which cannot happen inside the test process.
"""

from __future__ import annotations

import subprocess
import sys

from .processes import ROOT, child_env


def test_demo_runs_and_behaves_as_designed() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "demo" / "run.py")],
        cwd=ROOT,
        env=child_env(PYTHONIOENCODING="utf-8"),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    assert "OK: every message ended as designed" in output
    assert "11 sent, 1 rejected, 1 failed, 1 uncertain (14 messages" in output
    assert "send_messages() raised DeliveryError: 3 messages not sent (11 sent)" in output
    assert "mailgun:not_sent → postmark:uncertain" in output
    assert "mailgun:not_sent → postmark:skipped → smtp:accepted" in output
    assert "eu_smtp:skipped → eu_backup:accepted" in output
    # The cross-check row: 11 accepted = 11 received, no Message-ID twice anywhere.
    assert any(line.split() == ["(all)", "11", "11", "1", "1"] for line in output.splitlines())
    # Part two: the breaker skips the dead mailer, then fails back after one probe.
    assert output.count("mailgun:skipped → postmark:accepted") == 2
    assert "requests Mailgun saw while its breaker was open: 0" in output
    assert "mailgun: open → half_open" in output and "mailgun: half_open → closed" in output
    # `status` is shown whole: every column of every row, down to Mailgun's last error.
    table = output[output.index("$ python manage.py mailrouter status"):].splitlines()[1:7]
    assert table[0].split()[-2:] == ["LAST", "ERROR"]
    [mailgun_row] = [line for line in table if line.split()[0] == "mailgun"]
    assert mailgun_row.endswith('not_sent: Mailgun API response 503 (Service Unavailable): '
                                '{ "message": "Service unavailable" }'), mailgun_row
    assert "key-demo" not in output + result.stderr
    assert "pm-demo" not in output + result.stderr
