"""Constructs by concern: the stacks in `infra_cdk/` compose them."""
