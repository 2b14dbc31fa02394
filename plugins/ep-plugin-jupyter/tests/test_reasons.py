"""Every reason code has one cause, and the README lists each with it."""

from __future__ import annotations

import re
from pathlib import Path

from ep_plugin_jupyter import reasons as R
from ep_server import Cause

README = Path(__file__).parent.parent / "README.md"


def test_every_code_constant_has_a_cause() -> None:
    codes = {v for k, v in vars(R).items() if k.isupper() and isinstance(v, str)}
    assert codes == set(R.CAUSES)
    assert all(getattr(R, code) == code for code in codes)


def test_the_readme_lists_every_code_with_its_cause() -> None:
    rows = re.findall(r"^\| `([A-Z_]+)` \| ([A-Z]+)", README.read_text(), re.MULTILINE)
    assert dict(rows) == {code: cause.name for code, cause in R.CAUSES.items()}
    assert len(rows) == len(R.CAUSES)


def test_a_reason_takes_its_code_s_cause() -> None:
    reason = R.reason(R.NOTEBOOK_URL_REFUSED, "taskinfo.notebook", "no")
    assert (reason.code, reason.cause, reason.field) == (
        "NOTEBOOK_URL_REFUSED",
        Cause.POLICY,
        "taskinfo.notebook",
    )
    assert not reason.retryable
    assert not R.reason(R.KERNEL_UNAVAILABLE, "taskinfo.kernel", "none").retryable
