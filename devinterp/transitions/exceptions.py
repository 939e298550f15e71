"""Errors of stage detection; every message says what was given and what is allowed."""

from __future__ import annotations


class DetectionError(ValueError):
    """Detection cannot run on this table or with these settings."""


class BadSegmentationParameters(DetectionError):
    """ruptures could not segment with these settings (ruptures' own exception has no message)."""
