"""Child process for tests/schedule/test_sqlite.py's crash test: accept prepared offers.

Usage: ``python ledger_crash_child.py DB NOW OFFERS_JSON``. OFFERS_JSON is a
file holding ``{"pools": {...}, "offers": [[offer_id, owner], ...]}``. For
each offer it calls ``accept`` and prints ``booking_id owner`` *after* the
call returned (the acknowledgement), flushed, until done or killed.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime

from ep_server.schedule.sqlite import SQLiteLedger


def main() -> None:
    path, now_text, spec_path = sys.argv[1:4]
    now = datetime.fromisoformat(now_text)
    with open(spec_path, encoding="utf-8") as spec_file:
        spec = json.load(spec_file)
    ledger = SQLiteLedger(path, spec["pools"], synchronous="FULL")
    print("ready", flush=True)
    for offer_id, owner in spec["offers"]:
        booking, _ = ledger.accept(offer_id, owner, now)
        print(f"{booking.id} {owner}", flush=True)
    ledger.close()
    print("done", flush=True)


if __name__ == "__main__":
    main()
