"""Token issuers: ``Signer`` signs with the key the keystore says is active now, and with
no other; ``KeySchedule`` is the schedule it follows.

Importing this loads neither the verifier nor asyncio nor any network client beyond
the keystore's own.
"""

from __future__ import annotations

from ..errors import RefreshRefused, SubjectRevoked
from ._schedule import KeySchedule
from ._open import open_signer, signer_for
from ._signer import SIGNER_CLAIMS, Signer

__all__ = ["Signer", "KeySchedule", "open_signer", "signer_for", "RefreshRefused", "SubjectRevoked", "SIGNER_CLAIMS"]
