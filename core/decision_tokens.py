"""Decision tokens: the credential every approval decision carries into a case.

The Podium API (or `podium token --decision`) mints one for the caller it has verified: a JWT
(HS256, audience `podium-decision`, a few minutes of life) whose subject and roles are who
decides, bound by `decision_digest` to one case, approval request, decision id and the exact
decision (action, amount, delegate, reason). A case applies a decision only after the
`verify_decision` activity, which holds the key, has checked it: the key never enters history,
and identity written in a signal's or update's payload is never trusted on its own.

The key is `PODIUM_DECISION_SECRET`; `podium up` creates one under `<data folder>/keys/` when
none is set, shared by its API and worker. Every API and worker of one deployment needs the
same key.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import jwt

from core.codec import load_or_create_secret
from core.settings import Settings

__all__ = [
    "DECISION_SECRET_FILE",
    "DecisionKey",
    "InvalidDecisionToken",
    "VerifiedDecision",
    "load_or_create_decision_secret",
]

DECISION_SECRET_FILE = "decision-secret"
DEFAULT_TTL_SECONDS = 600
MIN_SECRET_LENGTH = 32
LEEWAY_SECONDS = 30
_ALGORITHM = "HS256"
# Imported by value: the contract's constant, spelled once (core never imports workflows/).
AUDIENCE = "podium-decision"


class InvalidDecisionToken(ValueError):
    """The token is missing, forged, expired or made for another decision; the message says
    which, in words an operator can act on (never the key)."""


@dataclass(frozen=True)
class VerifiedDecision:
    subject: str
    roles: list[str]


def load_or_create_decision_secret(settings: Settings) -> str:
    """`PODIUM_DECISION_SECRET`, else the development key under `<data_dir>/keys/`."""
    if settings.decision_secret is not None:
        secret = settings.decision_secret.get_secret_value()
        if len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"PODIUM_DECISION_SECRET must be at least {MIN_SECRET_LENGTH} characters "
                "(and the same for every API and worker of the deployment)"
            )
        return secret
    path = settings.data_dir / "keys" / DECISION_SECRET_FILE
    return load_or_create_secret(path, lambda: secrets.token_urlsafe(48))


@dataclass(frozen=True)
class DecisionKey:
    """Mints and checks decision tokens with one shared secret."""

    secret: str
    ttl_seconds: int = DEFAULT_TTL_SECONDS

    @classmethod
    def from_settings(cls, settings: Settings) -> DecisionKey:
        return cls(load_or_create_decision_secret(settings), settings.decision_token_ttl_s)

    def mint(self, *, subject: str, roles: list[str], digest: str) -> str:
        now = int(time.time())
        claims = {
            "sub": subject,
            "roles": list(roles),
            "dig": digest,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + self.ttl_seconds,
        }
        return jwt.encode(claims, self.secret, algorithm=_ALGORITHM)

    def verify(self, token: str, *, digest: str) -> VerifiedDecision:
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=[_ALGORITHM],
                audience=AUDIENCE,
                leeway=LEEWAY_SECONDS,
                options={"require": ["sub", "exp", "aud", "dig"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidDecisionToken("the decision token has expired") from None
        except jwt.InvalidAudienceError:
            raise InvalidDecisionToken("the credential is not a decision token") from None
        except jwt.PyJWTError as err:
            raise InvalidDecisionToken(f"the decision token is not valid ({err})") from None
        if claims.get("dig") != digest:
            raise InvalidDecisionToken(
                "the decision token was made for another case or another decision"
            )
        subject = str(claims["sub"]).strip()
        roles = claims.get("roles") or []
        if not subject or not isinstance(roles, list):
            raise InvalidDecisionToken("the decision token names no one")
        return VerifiedDecision(subject=subject, roles=[str(role) for role in roles])
