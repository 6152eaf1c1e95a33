"""PyTorch twins of scalarize-nn's models, with the same parameter names.

`build(model_spec, heads_spec)` returns an `nn.Module` whose `state_dict()` keys equal the
tensor names of a scalarize checkpoint (`backbone.layer1.0.conv1.weight`,
`backbone.blocks.0.attn.qkv.weight`, `heads.0.weight`, ...), so
`module.load_state_dict(safetensors.torch.load_file(ckpt))` works after dropping `optim.*`.
The spec grammars are the ones documented in crates/nn/src/spec/{model,heads}.rs.
Only torch is needed (no torchvision or timm).
"""

import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

RESNET_DEPTHS = {26: [2, 2, 2, 2], 38: [3, 3, 3, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}
VIT_SIZES = {"ti": (192, 3, 12), "s": (384, 6, 12), "b": (768, 12, 12), "l": (1024, 16, 24)}
DENSE_HIDDEN = 64


def parse_model(spec):
    """Parses `resnet26:w0.25` / `vit-ti:p4:d6` into a dict (same grammar as the Rust side)."""
    parts = spec.strip().split(":")
    fam = parts[0].lower()
    out = {"resolution": 32, "channels": 3}
    m = re.fullmatch(r"resnet(\d+)", fam)
    if m:
        out.update(family="resnet", depth=int(m.group(1)), width=1.0)
        if out["depth"] not in RESNET_DEPTHS:
            raise ValueError(f"bad model spec {spec!r}: ResNet depth {out['depth']}")
    elif fam.startswith("vit-"):
        size = {"tiny": "ti", "small": "s", "base": "b", "large": "l"}.get(fam[4:], fam[4:])
        if size not in VIT_SIZES:
            raise ValueError(f"bad model spec {spec!r}: ViT size {size!r}")
        dim, heads, depth = VIT_SIZES[size]
        out.update(family="vit", dim=dim, heads=heads, depth=depth, patch=16)
    else:
        raise ValueError(f"bad model spec {spec!r}")
    for opt in parts[1:]:
        key, val = opt[0].lower(), opt[1:]
        if key == "w" and out["family"] == "resnet":
            out["width"] = float(val)
        elif key == "p" and out["family"] == "vit":
            out["patch"] = int(val)
        elif key == "d" and out["family"] == "vit":
            out["depth"] = int(val)
        elif key == "r":
            out["resolution"] = int(val)
        elif key == "c":
            out["channels"] = int(val)
        else:
            raise ValueError(f"bad model spec {spec!r}: option {opt!r}")
    return out


def parse_heads(spec):
    """Parses `10,a40,d3,10*2` into [("c", 10), ("a", 40), ("d", 3), ("c", 10), ("c", 10)]."""
    heads = []
    for item in spec.split(","):
        item = item.strip()
        body, _, count = item.partition("*")
        count = int(count) if count else 1
        kind = "c" if body[0].isdigit() else body[0].lower()
        n = int(body if body[0].isdigit() else body[1:])
        if kind not in "cad":
            raise ValueError(f"bad heads spec {spec!r}: item {item!r}")
        heads.extend([(kind, n)] * count)
    return heads


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (v1.5: stride on the 3x3 conv)."""

    def __init__(self, inplanes, planes, stride, downsample):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if downsample:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4)
            )

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNetCifar(nn.Module):
    """ResNet with the CIFAR stem (3x3 conv stride 1, no max-pool); returns the last map."""

    def __init__(self, depth, width, channels=3):
        super().__init__()
        base = int(64 * width)
        self.out_dim = base * 32
        self.conv1 = nn.Conv2d(channels, base, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        inplanes = base
        for s, n in enumerate(RESNET_DEPTHS[depth]):
            planes = base << s
            blocks = []
            for j in range(n):
                stride = 2 if (j == 0 and s > 0) else 1
                down = j == 0 and (stride != 1 or inplanes != planes * 4)
                blocks.append(Bottleneck(inplanes, planes, stride, down))
                inplanes = planes * 4
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class PatchEmbed(nn.Module):
    def __init__(self, patch, channels, dim):
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """timm's Attention (fused qkv, scale applied to q)."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """timm's VisionTransformer layout (class token, learned pos_embed, pre-norm); returns tokens."""

    def __init__(self, dim, heads, depth, patch, resolution, channels=3):
        super().__init__()
        self.out_dim, self.patch = dim, patch
        tokens = (resolution // patch) ** 2 + 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, dim))
        self.patch_embed = PatchEmbed(patch, channels, dim)
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        t = self.patch_embed(x)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1) + self.pos_embed
        for blk in self.blocks:
            t = blk(t)
        return self.norm(t)


class MultiHead(nn.Module):
    """Backbone + heads (`heads.{t}`): Linear for classifier/binary heads, and for dense heads
    Sequential(Conv3x3 -> 64, ReLU, Conv1x1 -> K) then bilinear upsampling to the input size."""

    def __init__(self, model_spec, heads_spec):
        super().__init__()
        s = parse_model(model_spec)
        self.kind = s["family"]
        if self.kind == "resnet":
            self.backbone = ResNetCifar(s["depth"], s["width"], s["channels"])
        else:
            self.backbone = ViT(s["dim"], s["heads"], s["depth"], s["patch"], s["resolution"], s["channels"])
        f = self.backbone.out_dim
        self.head_kinds = parse_heads(heads_spec)
        mods = []
        for kind, n in self.head_kinds:
            if kind == "d":
                seq = nn.Sequential(nn.Conv2d(f, DENSE_HIDDEN, 3, padding=1), nn.ReLU(), nn.Conv2d(DENSE_HIDDEN, n, 1))
                for m in seq:
                    if isinstance(m, nn.Conv2d):
                        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                        nn.init.zeros_(m.bias)
                mods.append(seq)
            else:
                lin = nn.Linear(f, n)
                if self.kind == "vit":
                    nn.init.trunc_normal_(lin.weight, std=0.02)
                    nn.init.zeros_(lin.bias)
                mods.append(lin)
        self.heads = nn.ModuleList(mods)

    def forward(self, x):
        """Returns one output per head (MTL routing: every head sees the whole batch)."""
        h, w = x.shape[2:]
        if self.kind == "resnet":
            fmap = self.backbone(x)
            pooled = fmap.mean(dim=(2, 3))
        else:
            tokens = self.backbone(x)
            pooled = tokens[:, 0]
            n, l, d = tokens.shape
            g = h // self.backbone.patch
            fmap = tokens[:, 1:].transpose(1, 2).reshape(n, d, g, w // self.backbone.patch)
        outs = []
        for (kind, _), head in zip(self.head_kinds, self.heads):
            if kind == "d":
                outs.append(F.interpolate(head(fmap), size=(h, w), mode="bilinear", align_corners=False))
            else:
                outs.append(head(pooled))
        return outs


def head_loss(kind, out, target):
    """The mean loss scalarize-nn uses for each head kind and target type."""
    if kind == "c":
        return F.cross_entropy(out, target, ignore_index=-100)
    if kind == "a":
        return F.binary_cross_entropy_with_logits(out, target)
    if target.dtype == torch.int64:
        return F.cross_entropy(out, target, ignore_index=-100)
    return F.mse_loss(out, target)


def build(model_spec, heads_spec):
    """The PyTorch module for a scalarize model spec and heads spec."""
    return MultiHead(model_spec, heads_spec)


def load_checkpoint(module, path):
    """Loads a scalarize checkpoint into `module` by name (strict; optimizer state ignored)."""
    from safetensors.torch import load_file

    sd = {k: v for k, v in load_file(path).items() if not k.startswith("optim.")}
    module.load_state_dict(sd, strict=True)
    return module
