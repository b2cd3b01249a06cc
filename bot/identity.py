"""Who asked, as OpenAI may know it: a `safety_identifier` per Slack user that names nobody.

OpenAI asks apps that serve many people to send a stable identifier of the end user with each request, so a
policy problem can be traced to one user instead of the whole organisation. Easel sends a keyed hash (HMAC-SHA256)
of the team and user ids: the same person always gets the same identifier, and without the key nobody can tell
whose it is (ids are few and guessable, so a plain hash would not do).
"""

from __future__ import annotations

import hashlib
import hmac


def safety_identifier(key: bytes, team_id: str, user_id: str) -> str:
    """64 hex characters (OpenAI allows up to 128)."""
    return hmac.new(key, f"{team_id}:{user_id}".encode(), hashlib.sha256).hexdigest()
