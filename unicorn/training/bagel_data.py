"""CPR records -> BAGEL training sequences, packed as BAGEL's trainer packs them (facts: the official
``data/dataset_base.py: pack_sequence`` and its t2i / vlm / edit datasets).

A record is a list of *items*, each one attention block:

    text       <|im_start|> ids <|im_end|>, causal, one rope position per token; with loss, the positions from
               <|im_start|> to the last id predict ids + <|im_end|> (CE)
    vit        <|vision_start|> ViT tokens <|vision_end|>, bidirectional, one rope position; the rope then +1
    vae        <|vision_start|> clean latent tokens (t = 0) <|vision_end|>, bidirectional, one position, rope +1
    target     <|vision_start|> noisy latent tokens <|vision_end|>: bidirectional and unseen by every other block,
               one position (the rope stays); MSE of the predicted velocity on its latent tokens

Every block sees all earlier blocks of its record (causal across blocks). The CPR kinds [ours, following the
official datasets' plans; instruction texts are unicorn.training.formats']:

    t2i         text(prompt, cfg) -> target(image)                                        (the T2I dataset)
    caption     vit(image) -> text(instruction) -> text(prompt, loss)                    (the VLM dataset)
    judgement   vit(image) -> text(judge instruction) -> text(reasoning + Score, loss)
    text        text(instruction) -> text(response, loss)
    reflection  vae(loser, cfg) -> vit(loser, cfg) -> text(instruction, cfg) -> target(winner)  (the edit dataset)

Items marked cfg are dropped with the condition-dropout chances (text: the item vanishes; an image: it vanishes
and the rope still advances by one, as the official packer does). Everything random about a sample -- dropout
coins, the VAE posterior noise, the target's flow time ``sigmoid(z)`` (shifted) and its noise -- comes from a
generator seeded by (seed, global row, slot), so a sample is the same on any world size and after a resume.
The frozen VAE encodes images here, in the data pipeline, under no_grad.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import PIL.Image
import torch

from unicorn.cpr.schema import KINDS, CPRRecord, ImageRef, RecordError
from unicorn.models.bagel_flow import training_timestep
from unicorn.models.bagel_image import to_tensor, vae_size, vit_size
from unicorn.models.bagel_vit import flattened_positions, patchify
from unicorn.training import formats
from unicorn.training.data import IGNORE, KIND_INDEX, load_image

# What feeds each position's input embedding.
TEXT, VIT, VAE_CLEAN, VAE_NOISY, PAD = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class Item:
    type: str  # text | vit | vae | target
    text: str | None = None
    image: ImageRef | None = None
    loss: bool = False
    cfg: bool = False


@dataclass(frozen=True)
class DropoutConfig:
    """Condition-dropout chances of cfg items (official trainer defaults: text 0.1, vit 0.3, vae 0.3)."""

    text: float = 0.0
    vit: float = 0.0
    vae: float = 0.0

    def __post_init__(self):
        for name in ("text", "vit", "vae"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"--{'cond' if name == 'text' else name + '-cond'}-dropout must be in [0, 1), "
                                 f"got {getattr(self, name)}")


def plan(r: CPRRecord) -> list[Item]:
    if r.kind == "t2i":
        return [Item("text", r.prompt, cfg=True), Item("target", image=r.image)]
    if r.kind == "caption":
        return [Item("vit", image=r.image), Item("text", r.instruction or formats.CAPTION_INSTRUCTION),
                Item("text", r.prompt.strip(), loss=True)]
    if r.kind == "judgement":
        instruction = r.instruction or formats.JUDGE_INSTRUCTION.format(prompt=r.prompt)
        return [Item("vit", image=r.image), Item("text", instruction),
                Item("text", formats.judgement_response(r.reasoning, r.score), loss=True)]
    if r.kind == "text":
        return [Item("text", r.instruction), Item("text", r.response.strip(), loss=True)]
    if r.kind == "reflection":
        return [Item("vae", image=r.loser_image, cfg=True), Item("vit", image=r.loser_image, cfg=True),
                Item("text", formats.REFLECTION_INSTRUCTION.format(prompt=r.prompt), cfg=True),
                Item("target", image=r.winner_image)]
    raise RecordError(f"field 'kind': {r.kind!r} is not supported")


@dataclass
class BagelSample:
    kind: int
    ids: list[int] = field(default_factory=list)  # token id per position (0 at image-token positions)
    source: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)  # rope
    block: list[int] = field(default_factory=list)  # image block index (>= 0), -1 on text
    text_labels: list[int] = field(default_factory=list)
    vit_images: list[torch.Tensor] = field(default_factory=list)  # [3, H, W] in [-1, 1]
    vae_images: list[torch.Tensor] = field(default_factory=list)  # [3, H, W] in [-1, 1], clean then target order
    posterior_noise: list[torch.Tensor] = field(default_factory=list)  # per VAE image [z, H/8, W/8]
    latents: list[torch.Tensor] = field(default_factory=list)  # per VAE image: clean latents x0 [n, p*p*z]
    latent_positions: list[torch.Tensor] = field(default_factory=list)
    noise: list[torch.Tensor] = field(default_factory=list)  # flow noise per VAE image (zeros when clean)
    timesteps: list[torch.Tensor] = field(default_factory=list)  # per VAE image [n] (0 when clean)

    def __len__(self) -> int:
        return len(self.ids)


def _generator(key: str) -> torch.Generator:
    digest = hashlib.sha256(f"bagel-sample:{key}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def _coin(key: str, index: int) -> float:
    digest = hashlib.sha256(f"bagel-dropout:{key}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64


class BagelSampleEncoder:
    """Tokenizes records into BAGEL sequences and encodes their VAE images with the frozen VAE."""

    def __init__(self, tokenizer, model, vae, data_dir: str, device="cpu", timestep_shift: float = 1.0,
                 dropout: DropoutConfig = DropoutConfig()):
        self.tokenizer = tokenizer
        self.arch = model.arch
        self.ids = model.token_ids
        self.spec = model.spec
        self.vae = vae.eval().requires_grad_(False)
        self.data_dir = data_dir
        self.device = torch.device(device)
        self.timestep_shift = timestep_shift
        self.dropout = dropout

    def _text_ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_bos=False)

    def _path(self, ref: ImageRef, name: str) -> str:
        if ref is None or ref.path is None:
            raise RecordError(f"field {name + '.path'!r}: required for BAGEL (its VAE and ViT read pixels; "
                              "VQ codes are Janus')")
        path = os.path.join(self.data_dir, ref.path)
        if not os.path.exists(path):
            raise RecordError(f"field {name + '.path'!r}: {path} does not exist")
        return path

    def _image_size(self, path: str) -> tuple[int, int]:
        with PIL.Image.open(path) as image:
            return image.size

    def _tokens(self, item: Item, path: str | None) -> int:
        if item.type == "text":
            return len(self._text_ids(item.text)) + 2
        w, h = self._image_size(path)
        if item.type == "vit":
            w, h = vit_size(self.arch, w, h)
            p = self.arch.vit.patch_size
        else:
            w, h = vae_size(self.arch, w, h)
            p = self.arch.latent_downsample
        return (w // p) * (h // p) + 2

    def _image_fields(self, r: CPRRecord) -> dict[int, str]:
        names = {id(ref): name for name, ref in r.images().items()}
        return names

    def length(self, r: CPRRecord) -> int:
        """Sequence length without dropout (the longest the sample can be); checks its images exist."""
        names = self._image_fields(r)
        total = 0
        for item in plan(r):
            path = self._path(item.image, names.get(id(item.image), "image")) if item.image is not None else None
            total += self._tokens(item, path)
        return total

    def _dropped(self, item: Item, key: str, index: int) -> bool:
        if not item.cfg or key is None:
            return False
        chance = {"text": self.dropout.text, "vit": self.dropout.vit, "vae": self.dropout.vae}[item.type]
        return chance > 0.0 and _coin(key, index) < chance

    @torch.no_grad()
    def encode(self, r: CPRRecord, drop_prompt: bool = False, key: str | None = None) -> BagelSample:
        """``key`` seeds the sample's draws (dropout coins, posterior and flow noise, flow time)."""
        del drop_prompt  # the Janus encoder's t2i dropout; BAGEL's are the DropoutConfig chances
        gen = _generator(key if key is not None else f"record:{r.id}")
        names = self._image_fields(r)
        s = BagelSample(KIND_INDEX[r.kind])
        rope, block = 0, 0
        ids = self.ids
        for index, item in enumerate(plan(r)):
            if self._dropped(item, key, index):
                rope += 0 if item.type == "text" else 1
                continue
            if item.type == "text":
                text_ids = self._text_ids(item.text)
                framed = [ids.im_start, *text_ids, ids.im_end]
                s.ids += framed
                s.source += [TEXT] * len(framed)
                s.positions += range(rope, rope + len(framed))
                s.block += [-1] * len(framed)
                s.text_labels += (text_ids + [ids.im_end] + [IGNORE]) if item.loss else [IGNORE] * len(framed)
                rope += len(framed)
                continue
            image = load_image(self._path(item.image, names.get(id(item.image), "image")))
            if item.type == "vit":
                pixels = to_tensor(image, vit_size(self.arch, *image.size))
                s.vit_images.append(pixels)
                p = self.arch.vit.patch_size
                n, kind = (pixels.shape[1] // p) * (pixels.shape[2] // p), VIT
            else:
                pixels = to_tensor(image, vae_size(self.arch, *image.size))
                n, kind = self._add_latents(s, pixels, item.type == "target", gen)
            s.ids += [ids.vision_start] + [0] * n + [ids.vision_end]
            s.source += [TEXT] + [kind] * n + [TEXT]
            s.positions += [rope] * (n + 2)
            s.block += [block] * (n + 2)
            s.text_labels += [IGNORE] * (n + 2)
            block += 1
            rope += 0 if item.type == "target" else 1
        return s

    def _add_latents(self, s: BagelSample, pixels: torch.Tensor, target: bool, gen: torch.Generator) -> tuple[int, int]:
        arch = self.arch
        z, down = arch.vae.z_channels, arch.vae.downsample
        posterior = torch.randn(z, pixels.shape[1] // down, pixels.shape[2] // down, generator=gen)
        latent = self.vae.encode(pixels[None].to(self.device), posterior[None].to(self.device))[0]
        x0 = patchify(latent, arch.latent_patch_size).float().cpu()
        n = x0.shape[0]
        if target:
            t = training_timestep(torch.randn(1, generator=gen), self.timestep_shift).expand(n).clone()
            noise = torch.randn(n, arch.patch_latent_dim, generator=gen)
        else:
            t, noise = torch.zeros(n), torch.zeros(n, arch.patch_latent_dim)
        s.vae_images.append(pixels)
        s.posterior_noise.append(posterior)
        s.latents.append(x0)
        s.latent_positions.append(flattened_positions(pixels.shape[1], pixels.shape[2], arch.latent_downsample,
                                                      arch.max_latent_size))
        s.noise.append(noise)
        s.timesteps.append(t)
        return n, VAE_NOISY if target else VAE_CLEAN

    def collate(self, rows: list[list[BagelSample]], seq_len: int) -> dict[str, torch.Tensor]:
        """Rows of samples -> [B, L] tensors plus the flat ViT patches and VAE latents in row-major order."""
        b = len(rows)
        out = {
            "input_ids": torch.zeros(b, seq_len, dtype=torch.long),
            "source": torch.full((b, seq_len), PAD, dtype=torch.long),
            "positions": torch.zeros(b, seq_len, dtype=torch.long),
            "segment": torch.zeros(b, seq_len, dtype=torch.long),  # 0 = padding
            "block": torch.full((b, seq_len), -1, dtype=torch.long),  # image block id, unique in its row
            "text_labels": torch.full((b, seq_len), IGNORE, dtype=torch.long),
            "label_kind": torch.full((b, seq_len), -1, dtype=torch.long),
        }
        vit_patches, vit_positions, vit_lens = [], [], []
        latent_keys = ("latents", "latent_positions", "noise", "timesteps")
        latents: dict[str, list[torch.Tensor]] = {k: [] for k in latent_keys}
        p, side = self.arch.vit.patch_size, self.arch.vit_max_num_patch_per_side
        for r, samples in enumerate(rows):
            start, blocks = 0, 0
            for seg, s in enumerate(samples, 1):
                span = slice(start, start + len(s))
                out["input_ids"][r, span] = torch.tensor(s.ids)
                out["source"][r, span] = torch.tensor(s.source)
                out["positions"][r, span] = torch.tensor(s.positions)
                out["segment"][r, span] = seg
                block = torch.tensor(s.block)
                out["block"][r, span] = torch.where(block >= 0, block + blocks, block)
                out["text_labels"][r, span] = torch.tensor(s.text_labels)
                out["label_kind"][r, span] = s.kind
                blocks += int(block.max()) + 1 if len(s.block) else 0
                start += len(s)
                for img in s.vit_images:
                    vit_patches.append(patchify(img, p))
                    vit_positions.append(flattened_positions(img.shape[1], img.shape[2], p, side))
                    vit_lens.append(vit_patches[-1].shape[0])
                for k in latent_keys:
                    latents[k] += getattr(s, k)
        dim, vit_dim = self.arch.patch_latent_dim, 3 * p * p
        out["vit_patches"] = torch.cat(vit_patches) if vit_patches else torch.zeros(0, vit_dim)
        out["vit_positions"] = torch.cat(vit_positions) if vit_positions else torch.zeros(0, dtype=torch.long)
        out["vit_lens"] = torch.tensor(vit_lens, dtype=torch.long)
        out["latents"] = torch.cat(latents["latents"]) if latents["latents"] else torch.zeros(0, dim)
        out["latent_positions"] = (torch.cat(latents["latent_positions"]) if latents["latent_positions"]
                                   else torch.zeros(0, dtype=torch.long))
        out["noise"] = torch.cat(latents["noise"]) if latents["noise"] else torch.zeros(0, dim)
        out["timesteps"] = torch.cat(latents["timesteps"]) if latents["timesteps"] else torch.zeros(0)
        return out


def term_counts(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[CE target tokens, MSE latent tokens, then both per CPR kind] of a batch (bagel_model.TERMS), float64."""
    ce_at, mse_at = batch["text_labels"] != IGNORE, batch["source"] == VAE_NOISY
    kinds = batch["label_kind"]
    ce_kinds = torch.bincount(kinds[ce_at], minlength=len(KINDS)).double()
    mse_kinds = torch.bincount(kinds[mse_at], minlength=len(KINDS)).double()
    totals = torch.tensor([float(ce_at.sum()), float(mse_at.sum())], dtype=torch.float64)
    return torch.cat((totals, ce_kinds, mse_kinds))


def num_tokens(batch: dict[str, torch.Tensor]) -> float:
    return float((batch["source"] != PAD).sum())
