"""Schemathesis hooks of the OpenAPI test (openapi.rs): what the fuzzer sends, bounded.

The document allows a claim, an exchange or a journal read to wait up to 30 s for work
(`waitMs`), and a fuzzer reaches for the largest values first: the run would spend its whole
budget waiting on long-polls, which are the subject of their own tests (long_poll.rs). Every
other value goes out as generated.
"""

import schemathesis

WAIT_MS_CAP = 20


def _cap_wait(fields):
    if not isinstance(fields, dict) or "waitMs" not in fields:
        return
    wait = fields["waitMs"]
    if isinstance(wait, bool):
        return
    if isinstance(wait, int) and wait > WAIT_MS_CAP:
        fields["waitMs"] = WAIT_MS_CAP
    elif isinstance(wait, str) and wait.strip().isdigit() and int(wait) > WAIT_MS_CAP:
        fields["waitMs"] = str(WAIT_MS_CAP)


@schemathesis.hook
def before_call(context, case, kwargs):
    _cap_wait(case.query)
    _cap_wait(case.body)
