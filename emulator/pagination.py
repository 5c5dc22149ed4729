"""Cursor pagination over a list kept in creation order, as the API's list endpoints do it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from .validate import ListQuery

T = TypeVar("T")


def paginate(items: Sequence[T], query: ListQuery, index_of: Callable[[str], int | None]) -> tuple[list[T], bool]:
    """One page of `items` (oldest first) in `query.order`, and whether more lie beyond it.

    `after` / `before` name objects: the page holds what comes after / before them in the
    requested order. With `before` alone, the page is the `limit` objects nearest to it.
    An unknown cursor gives an empty page.
    """
    low, high = 0, len(items)  # the window, as a slice of the oldest-first list
    newer_cursor, older_cursor = (query.before, query.after) if query.order == "desc" else (query.after, query.before)
    for cursor, is_lower_bound in ((older_cursor, False), (newer_cursor, True)):
        if cursor is None:
            continue
        index = index_of(cursor)
        if index is None:
            return [], False
        if is_lower_bound:
            low = max(low, index + 1)
        else:
            high = min(high, index)
    if high <= low:
        return [], False
    from_newest = query.order == "desc"
    if query.before is not None and query.after is None:
        from_newest = not from_newest  # the end of the window next to the cursor
    if from_newest:
        start = max(low, high - query.limit)
        page, more = list(items[start:high]), start > low
    else:
        end = min(high, low + query.limit)
        page, more = list(items[low:end]), end < high
    if query.order == "desc":
        page.reverse()
    return page, more
