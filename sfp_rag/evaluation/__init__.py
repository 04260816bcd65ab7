"""Evaluations: STS (``sts``); later modules add BEIR retrieval and semantic-space metrics."""

from __future__ import annotations
