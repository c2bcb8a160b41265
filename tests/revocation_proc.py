"""A process of the propagation test (tests/test_revocation.py).

    revocation_proc.py write  REDIS_URL PREFIX -        PLAN OUT   one revocation per plan entry;
                                                                   OUT: time.time() as each write returned
    revocation_proc.py verify REDIS_URL PREFIX JWKS_URL PLAN OUT   prints "ready", then polls each entry's
                                                                   token until rejected; OUT: time.time() of each
"""

from __future__ import annotations

import json
import random
import sys
import time

from rotator.revocation import RevocationStore
from rotator.verifier import Revoked, Verifier


def main() -> None:
    mode, url, prefix, jwks_url, plan_path, out = sys.argv[1:7]
    plan = json.loads(open(plan_path).read())
    store = RevocationStore.from_url(url, prefix=prefix)
    times: list[float] = []
    if mode == "write":
        for entry in plan:
            if entry["kind"] == "deny":
                store.deny(entry["jti"], time.time() + 600)
            elif entry["kind"] == "cutoff":
                store.revoke_subject(entry["sub"])
            else:
                store.bump_session(entry["sub"])
            times.append(time.time())
            time.sleep(random.uniform(0.002, 0.02))
    else:
        verifier = Verifier(jwks_url, allow_http=True, revocations=store)
        for entry in plan:
            verifier.verify(entry["token"])  # every token is valid before its revocation
        print("ready", flush=True)
        for entry in plan:
            while True:
                try:
                    verifier.verify(entry["token"])
                except Revoked:
                    times.append(time.time())
                    break
                time.sleep(0.0002)
    with open(out, "w") as fh:
        json.dump(times, fh)
    store.close()


if __name__ == "__main__":
    main()
