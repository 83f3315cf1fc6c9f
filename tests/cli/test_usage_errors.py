"""Usage errors on the command line exit 2 naming the option, never 1 "unexpected", and write nothing
(docs/contract.md §3 limits on every interface; docs/operations.md exit codes)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.cli.test_credits_examples import CUST, NS, Cli, api_item, doc, written

# Decimals the document parser refuses (docs/contract.md §3 "decimals", "digits"): another script's digits,
# full-width digits, `_` separators, surrounding spaces, exponents, and more than 38 digits.
BAD_DECIMALS = [
    "١٢٣",
    "１２３",
    "1_000",
    " 5 ",
    "5 ",
    "\t5",
    "1e3",
    "NaN",
    "Infinity",
    "1" + "0" * 38,
    "0." + "0" * 38 + "1",
]


@pytest.mark.parametrize("bad", BAD_DECIMALS)
def test_decimal_options_obey_the_contract(cli_env: dict[str, str], tmp_path: Path, db: Engine, bad: str) -> None:
    cli = Cli(cli_env, tmp_path, db)
    cli.apply(doc("credit_only", api_item()))
    cli.sync("2024-01-01T00:01:00Z")
    (usage,) = cli.charges().values()
    before = written(cli)
    grant = ("credits", "grant", *NS, *CUST, "--currency", "USD", "--amount", bad)
    assert "--amount" in cli.fail(2, *grant)
    assert "--quantity" in cli.fail(2, "charges", "set-quantity", *NS, "--charge", usage["id"], "--quantity", bad)
    assert written(cli) == before


def test_38_digit_decimal_options_are_accepted(cli_env: dict[str, str], tmp_path: Path, db: Engine) -> None:
    cli = Cli(cli_env, tmp_path, db)
    amount = "9" * 36 + ".99"  # 38 digits, the contract's bound
    assert cli.grant(amount, "cgr_big")["amount"] == amount
    assert "at most 38 digits" in cli.fail(
        2, "credits", "grant", *NS, *CUST, "--currency", "USD", "--amount", "1" + amount
    )
