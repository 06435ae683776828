"""Named crash points for crash-safety tests, off unless RLHF_FAILPOINTS names them.

`RLHF_FAILPOINTS=outbox.after_publish` makes the process SIGKILL itself when it reaches that
point, the way a power cut would: no finally blocks, no clean shutdown. Production never sets it.
"""

import os
import signal

_ARMED = frozenset(p.strip() for p in os.environ.get("RLHF_FAILPOINTS", "").split(",") if p.strip())


def failpoint(name: str) -> None:
    if name in _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
