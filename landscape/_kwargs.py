"""Keyword arguments given as a dict or a JSON object string (``--model-kwargs``,
``--data-kwargs``): one parser for every spec that takes them."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["parse_kwargs"]


def parse_kwargs(
    kwargs: dict[str, Any] | str | None, what: str, error: type[Exception], example: str
) -> dict[str, Any]:
    """``kwargs`` as a dict: None and blank strings give ``{}``; a string must be a JSON object.

    ``what`` names them in messages (``"model kwargs"``), ``error`` is raised, ``example`` shows
    an object the user could have written.
    """
    if kwargs is None:
        return {}
    if isinstance(kwargs, str):
        text = kwargs.strip()
        if not text:
            return {}
        try:
            kwargs = json.loads(text)
        except json.JSONDecodeError as exc:
            raise error(
                f"{what} {text!r} are not valid JSON ({exc.msg} at char {exc.pos}); expected an object like {example}"
            ) from None
    if not isinstance(kwargs, dict):
        raise error(f"{what} must be a dict or a JSON object, got {type(kwargs).__name__}: {kwargs!r}")
    return dict(kwargs)
