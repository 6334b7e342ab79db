"""Bounds of the API types: pages stay within the registry's window, queries parse leniently."""

from __future__ import annotations

import msgspec
import pytest

from signaling.admin.schemas import (
    MAX_AOR_PREFIX,
    MAX_PAGE,
    PageQuery,
    RegistrationQuery,
    SessionQuery,
)
from signaling.registry.base import MAX_LIST_WINDOW


def _bound(kind: type, field: str, key: str) -> int:
    _, components = msgspec.json.schema_components([kind])
    bound: int = components[kind.__name__]["properties"][field][key]
    return bound


def test_deepest_page_fits_the_registry_listing_window() -> None:
    # Registry.list_aors raises ValueError beyond MAX_LIST_WINDOW: no valid query may reach it.
    deepest = _bound(PageQuery, "offset", "maximum") + _bound(PageQuery, "limit", "maximum")
    assert deepest <= MAX_LIST_WINDOW
    assert _bound(PageQuery, "limit", "maximum") == MAX_PAGE
    assert _bound(RegistrationQuery, "prefix", "maxLength") == MAX_AOR_PREFIX


def test_query_strings_convert_from_text() -> None:
    q = msgspec.convert({"offset": "5", "limit": "7", "prefix": "sip:a", "other": "x"},
                        RegistrationQuery, strict=False)
    assert (q.offset, q.limit, q.prefix) == (5, 7, "sip:a")
    assert msgspec.convert({}, SessionQuery, strict=False).limit == 100


@pytest.mark.parametrize("query", [{"limit": "0"}, {"offset": "-1"}, {"limit": "1e9"},
                                   {"offset": "ten"}, {"limit": str(MAX_PAGE + 1)}])
def test_out_of_bounds_queries_are_refused(query: dict[str, str]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(query, PageQuery, strict=False)
