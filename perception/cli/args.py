"""Argument types shared by the sub-commands (argparse ``type=`` callables that refuse bad values clearly)."""

from __future__ import annotations

import argparse

from perception.errors import ConfigError


def parse_size(text: str) -> tuple[int, int]:
    """``"640x480"`` → ``(640, 480)`` (width, height); raises :class:`ConfigError` otherwise."""
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ConfigError(f"a size must look like WIDTHxHEIGHT (e.g. 640x480), got {text!r}")
    w, h = (int(p) for p in parts)
    if w <= 0 or h <= 0:
        raise ConfigError(f"a size must be positive, got {text!r}")
    return w, h


def size_arg(text: str) -> tuple[int, int]:
    """:func:`parse_size` as an argparse type."""
    try:
        return parse_size(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def positive_int(text: str) -> int:
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0, "an integer >= 0")


def _int_at_least(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from exc
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value
