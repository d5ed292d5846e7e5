"""The shared option checks: what they accept, what they refuse and how they say it."""

import math

import pytest

from cnnzoo.checks import (
    check_choice,
    check_int,
    check_number,
    check_rate,
    did_you_mean,
    is_int,
    is_number,
)
from cnnzoo.errors import DataError, InvalidArgumentError


@pytest.mark.parametrize("value", [1, 7, 10**9])
def test_check_int_accepts_positive_ints(value):
    assert check_int("--epochs", value) == value


@pytest.mark.parametrize("value", [0, -3, True, False, 1.0, "2", None])
def test_check_int_refuses_everything_else(value):
    with pytest.raises(InvalidArgumentError, match=r"^--epochs must be a positive integer, got "):
        check_int("--epochs", value)


def test_check_int_minimum_and_error_class():
    assert check_int("seed", 0, minimum=0) == 0
    with pytest.raises(InvalidArgumentError, match="seed must be a whole number ≥ 0, got -1"):
        check_int("seed", -1, minimum=0)
    with pytest.raises(InvalidArgumentError, match="a whole number ≥ 3, got 2"):
        check_int("k", 2, minimum=3)
    with pytest.raises(DataError, match="workers"):
        check_int("workers", "x", error=DataError)


def test_check_number():
    assert check_number("--lr", 1, low=0, above=True) == 1
    assert check_number("--weight-decay", 0, low=0) == 0
    assert check_number("--shift", -2.5) == -2.5
    for bad in (0, -1e-3, math.nan, math.inf, True, "0.1", None):
        with pytest.raises(InvalidArgumentError, match=r"^--lr must be a number > 0, got "):
            check_number("--lr", bad, low=0, above=True)
    with pytest.raises(InvalidArgumentError, match=r"^--weight-decay must be a number ≥ 0, got -1"):
        check_number("--weight-decay", -1, low=0)
    with pytest.raises(InvalidArgumentError, match=r"must be a number in \[0, 1\), got 1\.0"):
        check_number("--label-smoothing", 1.0, low=0, below=1)
    with pytest.raises(InvalidArgumentError, match=r"^k must be an integer, got 1\.5"):
        check_number("k", 1.5, integer=True)


def test_predicates():
    assert is_int(3) and not is_int(True) and not is_int(3.0)
    assert is_number(3) and is_number(0.5) and not is_number(False) and not is_number(math.nan)


def test_choice_and_hint():
    assert check_choice("--optimizer", "adam", ["sgd", "adam"]) == "adam"
    with pytest.raises(
        InvalidArgumentError,
        match=r"^--optimizer 'adm' is not one of sgd, adam, adamw "
        r"\(did you mean adam, adamw\?\)\.$",
    ):
        check_choice("--optimizer", "adm", ["sgd", "adam", "adamw"])
    with pytest.raises(InvalidArgumentError, match=r"is not one of sgd, adam\.$"):
        check_choice("--optimizer", "zzz", ["sgd", "adam"])
    assert did_you_mean("resnt18", ["resnet18", "vgg11"]) == " (did you mean resnet18?)"
    assert did_you_mean("qqq", ["resnet18"]) == ""


def test_check_rate():
    assert check_rate("dropout", 0) == 0.0 and check_rate("dropout", 0.5) == 0.5
    for bad in (1, 1.0, -0.1, True, "0.2", math.nan):
        with pytest.raises(InvalidArgumentError, match=r"^dropout must be a number in \[0, 1\)"):
            check_rate("dropout", bad)
