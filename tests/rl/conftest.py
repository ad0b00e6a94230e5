"""RL test helpers: a stage config writer with fast settings for the tiny models."""

from __future__ import annotations
