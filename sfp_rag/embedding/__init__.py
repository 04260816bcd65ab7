"""The embedding core: text -> prompt -> tokens -> model -> Rep1/Rep2 -> vectors.

``prompts`` renders the two-stage CSE-SFP prompt and marks where Rep1 sits; ``tokenization`` turns rendered prompts
into a ``PromptBatch`` with the Rep1/Rep2 token positions (only the text slot is truncated); ``backbones`` finds and
loads a decoder (built-in offline GGUF, model folder or hub id); ``modeling`` runs it once and gathers both
positions (``pooling``); ``encoder`` is the front door (``SFPEncoder.encode``) and ``config`` its validated
``EncoderConfig``, saved next to the weights. This package is the bottom layer: it imports nothing of sfp_rag but
``sfp_rag._utils``.
"""

from __future__ import annotations
