"""Named crash points for crash-safety tests, off unless RLHF_FAILPOINTS names them.

`RLHF_FAILPOINTS=outbox.after_publish` makes the process SIGKILL itself the first time it reaches
that point, the way a power cut would: no finally blocks, no clean shutdown. `name@3` waits for
the third time. Production never sets the variable.
"""

import os
import signal
from collections import Counter


def _parse(spec: str) -> dict[str, int]:
    armed = {}
    for item in filter(None, (p.strip() for p in spec.split(","))):
        name, _, nth = item.partition("@")
        armed[name] = int(nth or 1)
    return armed


_ARMED = _parse(os.environ.get("RLHF_FAILPOINTS", ""))
_hits: Counter[str] = Counter()


def failpoint(name: str) -> None:
    if name in _ARMED:
        _hits[name] += 1
        if _hits[name] >= _ARMED[name]:
            os.kill(os.getpid(), signal.SIGKILL)
