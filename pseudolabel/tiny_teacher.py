"""Build a tiny random depth teacher and save it like a downloaded one, for offline smoke runs and tests.

``python -m pseudolabel.tiny_teacher --out DIR [--architecture dpt|dpt_hybrid|depth_anything|zoedepth|depth_pro|glpn]
[--seed S]`` writes ``config.json``, ``model.safetensors`` and ``preprocessor_config.json`` (for ZoeDepth, Depth Pro
and GLPN their own image processor's, at a small size: :data:`TINY_PROCESSORS`); ``--teacher.model DIR`` then loads
it through the same code as a hub id. Its weights are random, so its labels are a fixed random function of the image,
not depth: it exercises the pipeline, it teaches nothing. The same builder makes real-size teachers with random weights
(:data:`REFERENCE_TEACHERS`: the architectures and FLOPs of DPT-Hybrid, DPT-Large and Depth Anything V2), which
time the pipeline on a GPU without a download (``benchmarks/gpu_suite.py``).

transformers' default init makes a tiny DPT output an almost constant map (a ReLU over values near 0), whose labels
would all be rejected as constant: convolutions are Kaiming-initialised, the position embeddings get a small random
value, and the last convolution's bias is set to 1.0, so the map varies with the image.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from pseudolabel.families import TEACHER_FAMILIES
from pseudolabel.teachers import DEFAULT_NORMALISATION

ARCHITECTURES = ("dpt", "dpt_hybrid", "depth_anything", "zoedepth", "depth_pro", "glpn")

#: The image processor settings saved with the tiny ZoeDepth, Depth Pro and GLPN: their defaults but a small size
#: (the real ZoeDepth runs at 384x512, Depth Pro at 1536x1536) so that a tiny teacher labels in well under a second.
TINY_PROCESSORS = {
    "zoedepth": {"size": {"height": 96, "width": 128}, "ensure_multiple_of": 32},
    "depth_pro": {"size": {"height": 64, "width": 64}},
    "glpn": {},
}


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
    if architecture in TINY_PROCESSORS:
        return _tiny_metric_config(architecture)
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


def _tiny_metric_config(architecture: str):
    """Tiny ZoeDepth (BEiT backbone, one bin head), Depth Pro (DINOv2 encoders, with its field-of-view model) and
    GLPN (four one-layer stages) configs, a few 0.1 M parameters each."""
    from transformers import DepthProConfig, GLPNConfig, ZoeDepthConfig

    if architecture == "zoedepth":
        return ZoeDepthConfig(
            backbone_config=dict(
                model_type="beit", image_size=64, patch_size=16, hidden_size=32, num_hidden_layers=4,
                num_attention_heads=2, intermediate_size=64, use_relative_position_bias=True,
                reshape_hidden_states=False, out_features=["stage1", "stage2", "stage3", "stage4"],
            ),
            neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, num_relative_features=8, bottleneck_features=16,
            num_attractors=[4, 2, 2, 1], bin_embedding_dim=8,
            bin_configurations=[{"n_bins": 8, "min_depth": 0.001, "max_depth": 10.0}],
        )
    if architecture == "depth_pro":
        encoder = dict(model_type="dinov2", image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2,
                       num_attention_heads=2, mlp_ratio=2)
        return DepthProConfig(
            patch_size=32, fusion_hidden_size=16, intermediate_hook_ids=[1, 0], intermediate_feature_dims=[8, 8],
            scaled_images_ratios=[0.5, 1], scaled_images_overlap_ratios=[0.0, 0.5], scaled_images_feature_dims=[16, 8],
            use_fov_model=True, num_fov_head_layers=1, image_model_config=dict(encoder),
            patch_model_config=dict(encoder), fov_model_config=dict(encoder),
        )
    return GLPNConfig(hidden_sizes=[8, 16, 32, 32], depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 2, 2],
                      decoder_hidden_size=16, mlp_ratios=[2, 2, 2, 2])


#: Real-size teachers: name -> (the hub checkpoint of that architecture, parameters in millions).
REFERENCE_TEACHERS = {
    "dpt_hybrid": ("Intel/dpt-hybrid-midas", 122.4),
    "dpt_large": ("Intel/dpt-large", 343.0),
    "depth_anything_v2_small": ("depth-anything/Depth-Anything-V2-Small-hf", 24.8),
    "depth_anything_v2_base": ("depth-anything/Depth-Anything-V2-Base-hf", 97.5),  # weights CC-BY-NC-4.0
    "depth_anything_v2_large": ("depth-anything/Depth-Anything-V2-Large-hf", 335.3),  # weights CC-BY-NC-4.0
}

#: Depth Anything V2 backbone and neck sizes: (hidden, layers, heads, out_indices, neck, fusion).
_DEPTH_ANYTHING_V2 = {
    "depth_anything_v2_small": (384, 12, 6, [3, 6, 9, 12], [48, 96, 192, 384], 64),
    "depth_anything_v2_base": (768, 12, 12, [3, 6, 9, 12], [96, 192, 384, 768], 128),
    "depth_anything_v2_large": (1024, 24, 16, [5, 12, 18, 24], [256, 512, 1024, 1024], 256),
}


def reference_config(name: str):
    """The transformers config of a real-size teacher architecture (see :data:`REFERENCE_TEACHERS`)."""
    from transformers import DepthAnythingConfig, DPTConfig

    if name == "dpt_hybrid":
        return DPTConfig(is_hybrid=True, backbone_featmap_shape=[1, 1024, 24, 24],
                         neck_hidden_sizes=[256, 512, 768, 768], reassemble_factors=[1, 1, 1, 0.5])
    if name == "dpt_large":
        return DPTConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                         neck_hidden_sizes=[256, 512, 1024, 1024], backbone_out_indices=[5, 11, 17, 23])
    if name in _DEPTH_ANYTHING_V2:
        hidden, layers, heads, out_indices, neck, fusion = _DEPTH_ANYTHING_V2[name]
        return DepthAnythingConfig(
            backbone_config=dict(model_type="dinov2", image_size=518, patch_size=14, hidden_size=hidden,
                                 num_hidden_layers=layers, num_attention_heads=heads, out_indices=out_indices,
                                 reshape_hidden_states=False),
            reassemble_hidden_size=hidden, neck_hidden_sizes=neck, fusion_hidden_size=fusion, head_hidden_size=32,
        )
    raise ValueError(f"unknown reference teacher {name!r}; expected one of {list(REFERENCE_TEACHERS)}")


def last_convolution(model: torch.nn.Module) -> torch.nn.Conv2d | None:
    """The convolution that produces the depth map before a final ReLU (None: no ReLU ends the map)."""
    model_type = model.config.model_type
    if model_type == "depth_pro":
        return model.head.layers[-2]
    if model_type in ("zoedepth", "glpn"):  # bins weighted by a softmax, a sigmoid times the maximum depth
        return None
    head = model.head
    return head.conv3 if hasattr(head, "conv3") else head.head[-2]


def build_tiny_teacher(architecture: str = "dpt", seed: int = 0) -> torch.nn.Module:
    """A tiny depth model with weights that make its map vary with the image (see the module docstring)."""
    return build_random_teacher(tiny_config(architecture), seed)


def build_random_teacher(config, seed: int = 0) -> torch.nn.Module:
    """A depth model of ``config`` with random weights that make its map vary with the image."""
    from transformers import AutoModelForDepthEstimation

    torch.manual_seed(seed)
    model = AutoModelForDepthEstimation.from_config(config)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    module.bias.zero_()
            if hasattr(module, "position_embeddings") and isinstance(module.position_embeddings, torch.nn.Parameter):
                torch.nn.init.normal_(module.position_embeddings, std=0.1)
        last = last_convolution(model)
        if last is not None:
            last.bias.fill_(1.0)
        if getattr(model, "fov_model", None) is not None:  # Depth Pro: 1 / its map is the depth, so no ReLU zeros,
            last.weight.mul_(0.004)  # and a field of view near 60 degrees, not a random angle
            model.fov_model.head.layers[-1].weight.mul_(0.01)
            model.fov_model.head.layers[-1].bias.fill_(60.0)
    return model.eval()


def save_tiny_teacher(out_dir: str | Path, architecture: str = "dpt", seed: int = 0) -> Path:
    """Build a tiny teacher and save it as a model folder (config, weights, preprocessor config)."""
    return save_teacher(build_tiny_teacher(architecture, seed), out_dir)


def save_teacher(model: torch.nn.Module, out_dir: str | Path) -> Path:
    """Save a depth model as a folder that :func:`pseudolabel.teachers.load_teacher` reads like a downloaded one."""
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    model_type = model.config.model_type
    if model_type in TINY_PROCESSORS:
        import transformers

        processor = getattr(transformers, TEACHER_FAMILIES[model_type].processor)
        processor(**TINY_PROCESSORS[model_type]).save_pretrained(out_dir)
        return out_dir
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
