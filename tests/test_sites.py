"""Sites, points, positions and layer specs: parsing, ordering and error messages."""

from __future__ import annotations

import random

import pytest

from personascope.errors import UsageError
from personascope.sites import (
    POINT_ORDER,
    Point,
    Position,
    Site,
    make_sites,
    parse_layers,
    parse_point,
    parse_position,
)

ALL_POINTS = list(Point)


@pytest.mark.parametrize("layer", [0, 1, 7, 29])
@pytest.mark.parametrize("point", ALL_POINTS)
def test_site_str_parse_round_trip(layer: int, point: Point) -> None:
    site = Site(layer, point)
    text = str(site)
    assert text == f"{layer}.{point.value}"
    assert Site.parse(text) == site
    assert str(Site.parse(text)) == text


def test_site_parse_defaults_to_resid_post_and_accepts_point_strings() -> None:
    assert Site.parse("12") == Site(12, Point.RESID_POST)
    assert Site.parse("3.mlp_out") == Site(3, Point.MLP_OUT)
    site = Site(2, "attn_out")
    assert site.point is Point.ATTN_OUT
    assert Site(4) == Site(4, Point.RESID_POST)
    assert hash(Site(4)) == hash(Site.parse("4.resid_post"))


def test_sites_sort_in_execution_order() -> None:
    sites = [Site(layer, p) for layer in range(3) for p in ALL_POINTS]
    shuffled = sites[:]
    random.Random(0).shuffle(shuffled)
    ordered = sorted(shuffled, key=lambda s: s.order)
    # Layer first, then resid_pre < attn_out < mlp_out < resid_post inside a block.
    assert ordered == sites
    assert [p for p in sorted(ALL_POINTS, key=POINT_ORDER.__getitem__)] == [
        Point.RESID_PRE, Point.ATTN_OUT, Point.MLP_OUT, Point.RESID_POST,
    ]
    assert Site(1, Point.RESID_POST).order < Site(2, Point.RESID_PRE).order


def test_make_sites_dedupes_and_orders() -> None:
    sites = make_sites([2, 0, 2], ["resid_post", "resid_pre", Point.RESID_POST])
    assert sites == [
        Site(0, Point.RESID_PRE), Site(0, Point.RESID_POST),
        Site(2, Point.RESID_PRE), Site(2, Point.RESID_POST),
    ]


@pytest.mark.parametrize("spec", ["all", "ALL", " all ", "", None])
def test_parse_layers_all(spec) -> None:
    assert parse_layers(spec, 5) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("0-2", [0, 1, 2]),
        ("1,3", [1, 3]),
        ("3,1,1", [1, 3]),
        ("2", [2]),
        (2, [2]),
        ([0, 3], [0, 3]),
        ("-1", [5]),
        (-1, [5]),
        ("1,3,-1", [1, 3, 5]),
        ("-2--1", [4, 5]),
        ("4-5", [4, 5]),
    ],
)
def test_parse_layers_specs(spec, expected: list[int]) -> None:
    assert parse_layers(spec, 6) == expected


@pytest.mark.parametrize("spec", ["4", 4, "-5", "0-4", "2-7", [0, 9], "1,4"])
def test_parse_layers_out_of_range_names_valid_range(spec) -> None:
    with pytest.raises(UsageError) as err:
        parse_layers(spec, 4)
    msg = str(err.value)
    assert "0..3" in msg
    assert "4 layers" in msg


@pytest.mark.parametrize("spec", ["x", "1.5", "a-2", "1-b", "one"])
def test_parse_layers_malformed_is_usage_error(spec: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_layers(spec, 4)
    assert repr(spec) in str(err.value)


def test_parse_layers_reversed_range_is_an_error_not_empty() -> None:
    with pytest.raises(UsageError, match="empty"):
        parse_layers("3-1", 4)


def test_unknown_point_lists_allowed_values() -> None:
    for call in (lambda: parse_point("residual"), lambda: Site(1, "residual"),
                 lambda: Site.parse("1.residual")):
        with pytest.raises(UsageError) as err:
            call()
        msg = str(err.value)
        assert "'residual'" in msg
        for p in ALL_POINTS:
            assert p.value in msg


def test_unknown_position_lists_allowed_values() -> None:
    assert parse_position("prompt_mean") is Position.PROMPT_MEAN
    with pytest.raises(UsageError) as err:
        parse_position("middle")
    msg = str(err.value)
    assert "'middle'" in msg
    for p in Position:
        assert p.value in msg


@pytest.mark.parametrize("text", ["x", "x.resid_post", "", ".mlp_out"])
def test_bad_site_text(text: str) -> None:
    with pytest.raises(UsageError, match="LAYER"):
        Site.parse(text)


@pytest.mark.parametrize("layer", ["3", 1.0, True, None])
def test_site_layer_must_be_int(layer) -> None:
    with pytest.raises(UsageError, match="int"):
        Site(layer)


def test_usage_error_is_value_error() -> None:
    # Callers that catch ValueError (argparse-style code) still see personascope's errors.
    with pytest.raises(ValueError):
        parse_layers("9", 2)
