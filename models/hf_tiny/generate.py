#!/usr/bin/env python3
"""Generates models/hf_tiny/: STAND-INS OF THE REAL ARCHITECTURE, with random
weights, for testing the node against the real contract.

Not trained, not the team's models: tiny Hugging Face `Kosmos2Model` and
`CLIPModel` instances (2 layers, width 32) with the real architectures, their
real processors (Kosmos2Processor with CLIP's image processor stretching to
224 px; CLIPProcessor resizing the shortest edge and centre-cropping), and
tokenizers built here from local text, because no model hub is reachable:
  kosmos2/  a sentencepiece Unigram model trained on local text, wrapped as an
            XLM-RoBERTa tokenizer, plus Kosmos-2's added tokens (the processor
            adds <image>, </image>, <grounding>, ... and 1024 patch tokens);
  clip/     a byte-level BPE trained with CLIP's own pipeline (NFC,
            whitespace, lowercase, CLIP's split regex, </w> suffixes).
Then scripts/export_policy.py exports, from these folders:
  hybrid/   Kosmos-2 + CLIP (own crop, text tower as a per-instruction stage)
            + LSTM + MLP: int32 exact-length ids, position_ids, f16 state and
            an f16 rank-4 action [1, 1, 4, 3], weights as external data;
  pure/     Kosmos-2 + LSTM + MLP: int64 ids, f32 state and action [1, 4, 3];
each with its manifest (scripts/hf_manifest.py, from the processors' files)
and reference.json: PyTorch's actions for frames/*.jpg fed by the Hugging
Face processors themselves. The tests compare the node with those.

Reproduce (a few minutes; torch is large, so not part of set-up or CI):
    python3 -m venv /tmp/hf && /tmp/hf/bin/pip install -r models/hf_tiny/requirements.txt
    /tmp/hf/bin/python models/hf_tiny/generate.py
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

# Local text the tokenizers learn from: robot instructions and plain English.
CORPUS = """
navigate around the obstacles to the cup
go to the red cup on the table and stop next to it
turn left at the door then move forward slowly
turn right and follow the wall until you reach the chair
move back a little, then strafe left towards the blue box
stop
please drive to the person near the window
avoid the boxes and come back here
find the green bottle in the kitchen and wait there
an image of a robot in a room with a table, two chairs and a cup
the quick brown fox jumps over the lazy dog
a photo of a cat sitting on a sofa next to a lamp
a mobile robot with omni wheels drives through an office corridor
grounding the phrase in the image: the cup on the left of the plate
look at the shelf, pick the closest object and bring it to me
there is a door on the right side of the hallway
slowly approach the charging station and dock
rotate in place until the camera sees the marker
keep a safe distance from people and obstacles
""".strip().splitlines()

FRAMES = {  # name: (width, height)
    "a_640x480.jpg": (640, 480),
    "b_1280x720.jpg": (1280, 720),
    "c_480x640.jpg": (480, 640),
    "d_320x240.jpg": (320, 240),
    "e_1920x1080.jpg": (1920, 1080),
}

INSTRUCTIONS = ["navigate around the obstacles to the cup", "  turn LEFT at the door, then stop  "]


def photo(w: int, h: int, seed: int) -> np.ndarray:
    """A camera-like scene: lit wall, floor, a cup and a box, edges and mild texture."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    left, right = rng.uniform(0.2, 0.9, 2)
    light = left + (right - left) * xs / w
    img = np.empty((h, w, 3), np.float32)
    img[...] = (light * 190 + 40)[..., None] * np.array([1.0, 0.97, 0.9], np.float32)
    floor = ys > h * 0.62
    img[floor] *= np.array([0.55, 0.5, 0.42], np.float32)
    for _ in range(3):
        cx, cy = rng.uniform(0.15, 0.85) * w, rng.uniform(0.45, 0.75) * h
        rw, rh = rng.uniform(0.03, 0.12) * w, rng.uniform(0.05, 0.15) * h
        box = (abs(xs - cx) < rw) & (abs(ys - cy) < rh)
        img[box] = rng.uniform(20, 230, 3)
    img += 6 * np.sin(xs / 3.1 + ys / 4.7)[..., None] + rng.normal(0, 2.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def kosmos2_tokenizer(out: Path):
    import sentencepiece as spm
    from transformers import XLMRobertaTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp) / "corpus.txt"
        text.write_text("\n".join(CORPUS * 3) + "\n")
        spm.SentencePieceTrainer.train(input=str(text), model_prefix=f"{tmp}/spm", vocab_size=300,
                                       model_type="unigram", character_coverage=1.0, bos_id=1, eos_id=2,
                                       unk_id=0, pad_id=-1, hard_vocab_limit=False, num_threads=1,
                                       minloglevel=2)
        sp = spm.SentencePieceProcessor(model_file=f"{tmp}/spm.model")
        from sentencepiece import sentencepiece_model_pb2 as pb

        proto = pb.ModelProto()
        proto.ParseFromString(Path(f"{tmp}/spm.model").read_bytes())
        charsmap = proto.normalizer_spec.precompiled_charsmap
    # XLM-RoBERTa's layout of a sentencepiece vocabulary (fairseq's offset):
    # <s> <pad> </s> <unk>, the pieces after sentencepiece's own specials, <mask>.
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(sp.id_to_piece(i), sp.get_score(i)) for i in range(3, sp.get_piece_size())]
    vocab.append(("<mask>", 0.0))
    return XLMRobertaTokenizer(vocab=vocab, _spm_precompiled_charsmap=charsmap or None)


def clip_tokenizer():
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token="<|endoftext|>"))
    bpe.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                             behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=["<|startoftext|>", "<|endoftext|>"],
                                  end_of_word_suffix="</w>", initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator(CORPUS * 3, trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return CLIPTokenizer(vocab=model["vocab"], merges=merges)


def tiny_kosmos2_config(vocab_size: int):
    """Kosmos-2's architecture at toy width: 2 layers of 32 in each tower, 64 latent queries."""
    from transformers import Kosmos2Config
    return Kosmos2Config(
        text_config=dict(vocab_size=vocab_size, embed_dim=32, layers=2, ffn_dim=64, attention_heads=4,
                         max_position_embeddings=256, dropout=0.0, attention_dropout=0.0, pad_token_id=1,
                         bos_token_id=0, eos_token_id=2),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=224, patch_size=14),
        latent_query_num=64)


def roughen(model: torch.nn.Module, std: float, seed: int) -> None:
    """Random weights large enough that the action depends on every pixel and token:
    with Hugging Face's 0.02 initialisation a tiny model's output barely moves, and a
    test of preprocessing could not fail."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * std)
            elif "bias" in name:
                p.copy_(torch.randn(p.shape, generator=g) * std * 0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.parse_args()
    from transformers import (CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor,
                              Kosmos2Model, Kosmos2Processor)

    for d in ["kosmos2", "clip", "hybrid", "pure", "frames"]:
        shutil.rmtree(HERE / d, ignore_errors=True)
        (HERE / d).mkdir()
    torch.manual_seed(0)

    # Kosmos-2: processor (its image processor stretches to 224x224, bicubic), model.
    tok = kosmos2_tokenizer(HERE / "kosmos2")
    k2_image = CLIPImageProcessorPil(size={"height": 224, "width": 224}, crop_size={"height": 224, "width": 224},
                                     do_center_crop=False)
    k2 = Kosmos2Processor(image_processor=k2_image, tokenizer=tok, num_patch_index_tokens=1024)
    k2.save_pretrained(HERE / "kosmos2")
    kosmos2 = Kosmos2Model(tiny_kosmos2_config(len(k2.tokenizer))).eval()
    roughen(kosmos2, 0.3, 1)
    kosmos2.save_pretrained(HERE / "kosmos2")

    # CLIP: processor (shortest edge 224, centre crop 224, bicubic), model with text and vision towers.
    ctok = clip_tokenizer()
    cp = CLIPProcessor(image_processor=CLIPImageProcessorPil(), tokenizer=ctok)
    cp.save_pretrained(HERE / "clip")
    ccfg = CLIPConfig(
        text_config=dict(vocab_size=len(ctok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, bos_token_id=ctok.bos_token_id,
                         eos_token_id=ctok.eos_token_id, pad_token_id=ctok.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=224, patch_size=32),
        projection_dim=16)
    clip = CLIPModel(ccfg).eval()
    roughen(clip, 0.3, 2)
    clip.save_pretrained(HERE / "clip")

    for i, (name, (w, h)) in enumerate(FRAMES.items()):
        buf = io.BytesIO()
        Image.fromarray(photo(w, h, 10 + i)).save(buf, "JPEG", quality=88)
        (HERE / "frames" / name).write_bytes(buf.getvalue())

    common = ["--frames", str(HERE / "frames"), "--hidden", "32", "--chunk", "4", "--stand-in", "--seed", "3"]
    for instruction in INSTRUCTIONS:
        common += ["--instruction", instruction]
    export = [sys.executable, str(ROOT / "scripts" / "export_policy.py")]
    subprocess.run(export + ["--kind", "hybrid", "--kosmos2", str(HERE / "kosmos2"), "--clip", str(HERE / "clip"),
                             "--io", "f16", "--ids", "int32", "--padding", "exact", "--external-data",
                             "--out", str(HERE / "hybrid")] + common, check=True)
    subprocess.run(export + ["--kind", "pure", "--kosmos2", str(HERE / "kosmos2"), "--io", "f32", "--ids", "int64",
                             "--padding", "exact", "--out", str(HERE / "pure")] + common, check=True)
    # Model weights are not needed by the node or the tests (the ONNX files carry them).
    for d in ["kosmos2", "clip"]:
        for f in (HERE / d).glob("model.safetensors"):
            f.unlink()
    print("done")


if __name__ == "__main__":
    main()
