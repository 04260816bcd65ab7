"""Train a CSE-SFP adapter from Python on a few thousand unlabelled sentences, then embed with it.

python examples/train_qlora.py            # 23 minutes when a new user ran it on 2 CPU cores (no GPU)

QLoRA (4-bit NF4) needs bitsandbytes (`pip install -e ".[train]"`). Without it the run says so before it loads
anything and trains plain LoRA over full-precision weights: the same adapter, more memory.
"""

from __future__ import annotations

from pathlib import Path

from sfp_rag import SFPEncoder, TrainConfig, train

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "unsup_sentences.txt.gz"


def main() -> None:
    config = TrainConfig(
        data=str(DATA),
        output_dir="runs/example-adapter",
        model="gemma3-270m",
        objective="single-pass",  # one forward pass of the two-stage prompt: Rep2 anchor, Rep1 positive
        template="eol-sum",
        quantization="nf4",  # QLoRA; plain LoRA (said before it starts) where bitsandbytes is missing or cannot train
        batch_size=32,
        max_steps=40,
        lr=1e-4,
        warmup_steps=5,
        max_train_texts=32 * 40,
    )
    result = train(config)
    print(f"trained {result.steps} steps, final loss {result.final_loss:.3f}: {result.output_dir}")

    encoder = SFPEncoder.from_pretrained(result.output_dir)  # base model + adapter + template from sfp_config.json
    vectors = encoder.encode(["A man is playing a guitar.", "Someone plays the guitar.", "Stocks fell sharply."])
    print("cosine similarities:\n", (vectors @ vectors.T).round(3))


if __name__ == "__main__":
    main()
