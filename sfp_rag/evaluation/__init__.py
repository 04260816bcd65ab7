"""Measuring embedders: STS (``sts``), BEIR retrieval (``beir``), alignment/uniformity (``space``), the reference
encoders compared against (``peers``) and the markdown/plot report over result files (``report``).

It may import ``embedding`` and ``retrieval`` (BEIR runs through the same chunking and FAISS path as an index);
it never imports ``training``, which uses it for dev-set checks.
"""

from __future__ import annotations
