"""Scaling the embedding step past one process: Ray (the ``distributed`` extra, ``ray[data]``).

``ray_engine`` holds ``RayEmbedder``: a callable ``texts -> vectors`` that runs Ray Data's ``map_batches`` over an
actor pool of ``SFPEncoder``s (one per GPU where the cluster has GPUs, else N CPU actors), joining a running cluster
(``address``) or starting a local Ray. The index builder and the BEIR evaluation take it in place of the in-process
encoder, so the index folder, its manifest, the resumable vector shards and the incremental updates are the same as
without Ray. This package may import ``embedding`` and ``retrieval``; only the CLI imports it.
"""

from __future__ import annotations
