"""The approval server's check of its load balancer's sign-in (`x-amzn-oidc-data`), on tokens signed as the ALB
signs them with a key the test makes."""

from __future__ import annotations

import pytest

from model_registry.alb_identity import AlbIdentityConfig, IdentityError, KeyCache, verify
from tests.alb import OTHER_SIGNER, SIGNER, SigningKey, key_endpoint

CLAIMS = {"email": "alice@example.org", "username": "alice", "email_verified": "true"}


def test_a_token_the_load_balancer_signed_names_its_user_and_its_key_is_fetched_once() -> None:
    key = SigningKey("kid-1")
    with key_endpoint(key) as keys:
        config, cache = AlbIdentityConfig(signer=SIGNER, keys=keys.url), KeyCache(keys.url)
        assert verify(key.token(CLAIMS), config, cache) == "alice@example.org"
        assert verify(key.token(CLAIMS), config.model_copy(update={"claim": "username"}), cache) == "alice"
        assert keys.asked == {"kid-1": 1}


@pytest.mark.parametrize(("case", "reason"), [
    ("forged", "signature does not verify"),
    ("another signer", "signed by 'arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/someone-else"),
    ("expired", "has expired"),
    ("not ES256", "not ES256"),
    ("unknown kid", "could not be had"),
    ("no claim", "carries no 'email' claim"),
    ("garbage", "not a signed token"),
])
def test_a_token_that_does_not_prove_who_sent_it_is_refused_with_why(case: str, reason: str) -> None:
    key, impostor = SigningKey("kid-1"), SigningKey("kid-1")  # the impostor claims the ALB's kid
    with key_endpoint(key) as keys:
        token = {"forged": lambda: impostor.token(CLAIMS),
                 "another signer": lambda: key.token(CLAIMS, signer=OTHER_SIGNER),
                 "expired": lambda: key.token(CLAIMS, lifetime_s=-120),
                 "not ES256": lambda: key.token(CLAIMS, alg="HS256"),
                 "unknown kid": lambda: key.token(CLAIMS, kid="kid-9"),
                 "no claim": lambda: key.token({"username": "alice"}),
                 "garbage": lambda: "not-a-token"}[case]()
        with pytest.raises(IdentityError, match=reason):
            verify(token, AlbIdentityConfig(signer=SIGNER, keys=keys.url), KeyCache(keys.url))
