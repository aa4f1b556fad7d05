"""Text encoders for the denoiser's captions: one interface over T5/mT5 encoders, CLIP text towers and BERT-like
models, loaded from a local folder (never a hub).

    encoder = TextEncoder.from_pretrained("mt5-xxl", max_length=512, dtype=torch.bfloat16, device="cuda")
    embeds, mask = encoder(["a cat playing the piano"])      # (1, 512, 4096), (1, 512)

The release conditions on mT5-XXL's last hidden states for prompts padded to 512 tokens, and keeps the attention
mask: the denoiser's cross-attention ignores the padded positions, so padding never changes the result. The same is
done here for every encoder kind (CLIP and BERT-like models give their token-level last hidden states too).

A folder holds ``config.json``, the weights and the tokenizer files (the layout ``save_pretrained`` writes), or the
diffusers layout with ``text_encoder/`` and ``tokenizer/`` subfolders.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple, Union

import torch

from wfvae.models.checkpoint import is_finite, read_json_object
from wfvae.cli_support import first_line

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "sentencepiece.bpe.model", "vocab.txt", "vocab.json",
                   "tokenizer_config.json")


def _encoder_class(model_type: str):
    """The transformers class that loads only the text encoder of a ``config.json`` ``model_type``."""
    from transformers import AutoModel, CLIPTextModel, MT5EncoderModel, T5EncoderModel, UMT5EncoderModel

    encoder_only = {
        "t5": T5EncoderModel,  # the decoder half of a T5 checkpoint is skipped
        "mt5": MT5EncoderModel,  # the release: google/mt5-xxl
        "umt5": UMT5EncoderModel,
        "clip": CLIPTextModel,  # a full CLIP checkpoint: its text tower only
        "clip_text_model": CLIPTextModel,
    }
    return encoder_only.get(model_type, AutoModel)


def locate(folder: str) -> Tuple[str, str]:
    """(model folder, tokenizer folder) for ``folder``; FileNotFoundError naming what is expected there."""
    folder = os.fspath(folder)
    model_dir, tok_dir = folder, folder
    if os.path.isdir(os.path.join(folder, "text_encoder")):
        model_dir = os.path.join(folder, "text_encoder")
        if os.path.isdir(os.path.join(folder, "tokenizer")):
            tok_dir = os.path.join(folder, "tokenizer")
        else:
            tok_dir = model_dir
    expected = (f"expected config.json, weights ({' or '.join(WEIGHT_FILES)}) and tokenizer files "
                f"({' or '.join(TOKENIZER_FILES[:-1])}, with {TOKENIZER_FILES[-1]})")
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"text encoder folder not found: {folder} ({expected})")
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise FileNotFoundError(f"no config.json in text encoder folder {model_dir} ({expected})")
    if not any(os.path.isfile(os.path.join(model_dir, name)) for name in WEIGHT_FILES):
        raise FileNotFoundError(f"no text encoder weights in {model_dir}: expected one of {', '.join(WEIGHT_FILES)}")
    if not any(os.path.isfile(os.path.join(tok_dir, name)) for name in TOKENIZER_FILES):
        raise FileNotFoundError(f"no tokenizer files in {tok_dir}: expected {', '.join(TOKENIZER_FILES)}")
    return model_dir, tok_dir


def read_config(folder: str) -> dict:
    """The text encoder's ``config.json`` as a dict (for checks before loading the weights); ValueError naming the
    file when it is not a JSON object."""
    model_dir, _ = locate(folder)
    config = read_json_object(os.path.join(model_dir, "config.json"), "text encoder config")
    if not isinstance(config.get("model_type", ""), str):
        raise ValueError(f"bad text encoder config {os.path.join(model_dir, 'config.json')}: model_type must be a "
                         f"string, got {config['model_type']!r}")
    return config


def _loading(what: str, folder: str, load):
    """``load()``, with any failure but running out of memory turned into one ValueError naming ``folder``."""
    try:
        return load()
    except (MemoryError, torch.OutOfMemoryError):
        raise
    except Exception as exc:  # transformers raises OSError, ValueError, SafetensorError, UnpicklingError ...
        raise ValueError(f"cannot load the {what} from {folder}: {first_line(exc)}") from None


def config_hidden_size(config: dict) -> int:
    """Width D of the embeddings an encoder with this ``config.json`` produces."""
    if config.get("model_type") == "clip" and "text_config" in config:
        config = config["text_config"]
    for key in ("d_model", "hidden_size", "dim", "n_embd"):
        if key in config:
            return int(config[key])
    raise ValueError(f"cannot tell the embedding width of a {config.get('model_type', '?')} text encoder")


class TextEncoder:
    """A tokenizer + encoder pair returning token embeddings ``(B, L, D)`` and the attention mask ``(B, L)``.

    Args:
        model: a transformers encoder whose output has ``last_hidden_state`` (``T5EncoderModel``,
            ``MT5EncoderModel``, ``CLIPTextModel``, ``BertModel`` ...).
        tokenizer: the matching tokenizer.
        max_length: prompts are padded (and truncated) to exactly this many tokens, as in the release (512); capped
            at the model's ``max_position_embeddings`` when it has one (77 for CLIP).
        device: where encoding runs (default: where the model is).
        cpu_offload: keep the weights on the CPU and move them to ``device`` only while encoding.
    """

    def __init__(self, model: torch.nn.Module, tokenizer, max_length: int = 512,
                 device: Union[str, torch.device, None] = None, cpu_offload: bool = False):
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        limit = getattr(model.config, "max_position_embeddings", None)
        self.max_length = min(max_length, limit) if limit else max_length
        self.cpu_offload = cpu_offload
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model.to("cpu" if cpu_offload else self.device)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, folder: str, max_length: int = 512, dtype: Optional[torch.dtype] = None,
                        device: Union[str, torch.device, None] = None, cpu_offload: bool = False) -> "TextEncoder":
        """Load tokenizer and encoder from a LOCAL folder (``local_files_only``; nothing is downloaded).

        The encoder class follows ``config.json``'s ``model_type``: t5/mt5/umt5 load the encoder only, clip its
        text tower, anything else ``AutoModel`` (BERT-like). ``dtype`` defaults to float32.
        Raises FileNotFoundError naming the folder and the files expected there, and ValueError naming the folder
        or file when the config, the weights (damaged, not matching the config, NaN/inf) or the tokenizer cannot
        be used.
        """
        from transformers import AutoTokenizer

        model_dir, tok_dir = locate(folder)
        config = read_config(folder)
        model_cls = _encoder_class(config.get("model_type", ""))
        model, info = _loading("text encoder weights", model_dir, lambda: model_cls.from_pretrained(
            model_dir, local_files_only=True, dtype=dtype or torch.float32, output_loading_info=True))
        if info.get("missing_keys") or info.get("mismatched_keys"):
            missing = sorted(info.get("missing_keys") or []) + [str(k[0]) for k in info.get("mismatched_keys") or []]
            raise ValueError(f"text encoder weights in {model_dir} do not match its config.json: "
                             f"{len(missing)} tensors missing or mis-shaped, e.g. {missing[:5]}")
        for name, tensor in model.state_dict().items():  # one min/max pass per tensor
            if not is_finite(tensor):
                raise ValueError(f"text encoder weights in {model_dir}: tensor {name} holds NaN or infinite values: "
                                 f"the checkpoint is broken")
        tokenizer = _loading("tokenizer", tok_dir,
                             lambda: AutoTokenizer.from_pretrained(tok_dir, local_files_only=True))
        return cls(model, tokenizer, max_length=max_length, device=device or "cpu", cpu_offload=cpu_offload)

    # ------------------------------------------------------------------ properties
    @property
    def hidden_size(self) -> int:
        """Embedding width D."""
        return config_hidden_size(self.model.config.to_dict())

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def to(self, device: Union[str, torch.device]) -> "TextEncoder":
        """Run on ``device`` from now on (with ``cpu_offload`` the weights still wait on the CPU)."""
        self.device = torch.device(device)
        if not self.cpu_offload:
            self.model.to(self.device)
        return self

    # ------------------------------------------------------------------ encoding
    def tokenize(self, prompts: Union[str, Sequence[str]]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask, both ``(B, max_length)`` int64, on the CPU."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        out = self.tokenizer(prompts, padding="max_length", max_length=self.max_length, truncation=True,
                             return_attention_mask=True, return_tensors="pt")
        return out["input_ids"], out["attention_mask"]

    @torch.no_grad()
    def encode(self, prompts: Union[str, Sequence[str]]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Embeddings ``(B, L, D)`` in the encoder's dtype and mask ``(B, L)`` (1 = token, 0 = padding), both on
        :attr:`device`; ``L = max_length``. Padded positions carry whatever the encoder outputs there: consumers
        must honour the mask (the denoiser does)."""
        ids, mask = self.tokenize(prompts)
        ids, mask = ids.to(self.device), mask.to(self.device)
        if self.cpu_offload:
            self.model.to(self.device)
        try:
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        finally:
            if self.cpu_offload:
                self.model.to("cpu")
        return hidden, mask

    __call__ = encode

    def __repr__(self) -> str:
        return (f"TextEncoder({type(self.model).__name__}, D={self.hidden_size}, max_length={self.max_length}, "
                f"dtype={self.dtype}, device={self.device}, cpu_offload={self.cpu_offload})")

