"""Training an embedder with CSE-SFP: the InfoNCE loss, the training texts, the loop and its checkpoints.

``losses`` holds ``info_nce``; ``data`` reads training text (files, JSONL, datasets, document folders, BEIR
corpora); ``trainer`` runs the single-pass objective (and the two-pass baselines) with QLoRA/LoRA; ``checkpoints``
saves and restores runs and exports adapters; ``config`` is ``TrainConfig``, saved with the adapter. It may import
``embedding`` (the model it trains), ``retrieval`` (the document reader behind ``--corpus``) and ``evaluation``
(dev-set checks during training and checkpoint selection); nothing above it.
"""

from __future__ import annotations
