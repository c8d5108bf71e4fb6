"""Build a tiny random depth teacher and save it like a downloaded one, for offline smoke runs and tests.

``python -m pseudolabel.tiny_teacher --out DIR [--architecture dpt|dpt_hybrid|depth_anything] [--seed S]`` writes
``config.json``, ``model.safetensors`` and ``preprocessor_config.json``; ``--teacher.model DIR`` then loads it through
the same code as a hub id. Its weights are random, so its labels are a fixed random function of the image, not depth:
it exercises the pipeline, it teaches nothing. The configs are the small ones listed in STACK.md.

transformers' default init makes a tiny DPT output an almost constant map (a ReLU over values near 0), whose labels
would all be rejected as constant: convolutions are Kaiming-initialised, the position embeddings get a small random
value, and the last convolution's bias is set to 1.0, so the map varies with the image.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from pseudolabel.teachers import DEFAULT_NORMALISATION

ARCHITECTURES = ("dpt", "dpt_hybrid", "depth_anything")


def tiny_config(architecture: str):
    """The transformers config of a tiny teacher (about 0.1-0.3 M parameters)."""
    from transformers import DepthAnythingConfig, DPTConfig

    if architecture == "dpt":
        return DPTConfig(
            hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, image_size=64,
            patch_size=16, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 16, 32, 32],
            fusion_hidden_size=16, use_auxiliary_head=False,
        )
    if architecture == "dpt_hybrid":
        return DPTConfig(
            is_hybrid=True, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
            image_size=64, patch_size=16, backbone_out_indices=[0, 1, 2, 3], reassemble_factors=[1, 1, 1, 0.5],
            neck_hidden_sizes=[64, 128, 32, 32], fusion_hidden_size=16, backbone_featmap_shape=[1, 256, 4, 4],
            backbone_config=dict(
                global_padding="same", layer_type="bottleneck", depths=[1, 1, 1], hidden_sizes=[64, 128, 256],
                embedding_size=32, out_features=["stage1", "stage2", "stage3"], embedding_dynamic_padding=True,
                num_groups=8,
            ),
        )
    if architecture == "depth_anything":
        return DepthAnythingConfig(
            backbone_config=dict(
                model_type="dinov2", image_size=56, patch_size=14, hidden_size=32, num_hidden_layers=4,
                num_attention_heads=2, mlp_ratio=2, out_indices=[1, 2, 3, 4], reshape_hidden_states=False,
            ),
            reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=8,
            patch_size=14,
        )
    raise ValueError(f"unknown tiny teacher architecture {architecture!r}; expected one of {list(ARCHITECTURES)}")


def last_convolution(model: torch.nn.Module) -> torch.nn.Conv2d:
    """The convolution that produces the depth map (before the final ReLU)."""
    head = model.head
    return head.conv3 if hasattr(head, "conv3") else head.head[-2]


def build_tiny_teacher(architecture: str = "dpt", seed: int = 0) -> torch.nn.Module:
    """A tiny depth model with weights that make its map vary with the image (see the module docstring)."""
    from transformers import AutoModelForDepthEstimation

    torch.manual_seed(seed)
    model = AutoModelForDepthEstimation.from_config(tiny_config(architecture))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    module.bias.zero_()
            if hasattr(module, "position_embeddings") and isinstance(module.position_embeddings, torch.nn.Parameter):
                torch.nn.init.normal_(module.position_embeddings, std=0.1)
        last_convolution(model).bias.fill_(1.0)
    return model.eval()


def save_tiny_teacher(out_dir: str | Path, architecture: str = "dpt", seed: int = 0) -> Path:
    """Build a tiny teacher and save it as a model folder (config, weights, preprocessor config)."""
    out_dir = Path(out_dir)
    model = build_tiny_teacher(architecture, seed)
    model.save_pretrained(out_dir)
    model_type = model.config.model_type
    mean, std = DEFAULT_NORMALISATION[model_type]
    preprocessor = {
        "image_processor_type": "DPTImageProcessor",
        "do_normalize": True,
        "image_mean": list(mean),
        "image_std": list(std),
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "resample": 3,
        "keep_aspect_ratio": True,
        "ensure_multiple_of": 32 if model_type == "dpt" else 14,
    }
    (out_dir / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pseudolabel.tiny_teacher", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder to write the model into")
    parser.add_argument("--architecture", choices=ARCHITECTURES, default="dpt")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    folder = save_tiny_teacher(args.out, args.architecture, args.seed)
    print(f"tiny {args.architecture} teacher written to {folder}; use it with --teacher.model {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
