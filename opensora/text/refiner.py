"""Prompt refiner: a local causal language model rewrites a short prompt into the detailed captions the denoiser
was trained on (the release fine-tuned LLaMA 3.1 for this, "caption refiner").

    refiner = PromptRefiner.from_pretrained("llama3_1_refiner", device="cuda", dtype=torch.bfloat16)
    refiner.refine("a dog is running")   # -> "A golden retriever bounds across a sunlit meadow, ..."

The instruction is the one the release's refiner was trained with, sent as a chat (system + user turn) through the
tokenizer's chat template; a tokenizer without a template gets a plain "System/User/Assistant" layout. Decoding is
greedy (deterministic). Nothing is downloaded: the folder must hold the model and its tokenizer.
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence, Union

import torch

SYSTEM_PROMPT = "You are a caption refiner."
INSTRUCTION = ('Refine the sentence: "{}" to contain subject description, action, scene description. '
               "(Optional: camera language, light and shadow, atmosphere) and conceive some additional actions to "
               "make the sentence more dynamic. Make sure it is a fluent sentence, not nonsense.")
DEFAULT_MAX_NEW_TOKENS = 512


class PromptRefiner:
    """Rewrites prompts with a causal LM (greedy decoding, at most ``max_new_tokens`` new tokens)."""

    def __init__(self, model: torch.nn.Module, tokenizer, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                 system_prompt: str = SYSTEM_PROMPT, instruction: str = INSTRUCTION):
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if "{}" not in instruction:
            raise ValueError("instruction must contain '{}' where the prompt goes")
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.system_prompt, self.instruction = system_prompt, instruction

    @classmethod
    def from_pretrained(cls, folder: str, dtype: Optional[torch.dtype] = None,
                        device: Union[str, torch.device, None] = None, **kwargs) -> "PromptRefiner":
        """Load ``AutoModelForCausalLM`` + ``AutoTokenizer`` from a LOCAL folder (``local_files_only``)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not os.path.isdir(folder):
            raise FileNotFoundError(f"prompt refiner folder not found: {folder} (expected a causal LM saved with "
                                    f"save_pretrained: config.json, weights and tokenizer files)")
        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise FileNotFoundError(f"no config.json in prompt refiner folder {folder}")
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=dtype or torch.float32)
        return cls(model.to(device or "cpu"), tokenizer, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def chat_text(self, prompt: str) -> str:
        """The full model input for ``prompt``, generation prompt included."""
        user = self.instruction.format(prompt.strip())
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": user}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return f"System: {self.system_prompt}\nUser: {user}\nAssistant:"

    def _generation_config(self):
        from transformers import GenerationConfig

        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = eos[0] if isinstance(eos, (list, tuple)) else eos
        return GenerationConfig(max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1,
                                eos_token_id=eos, pad_token_id=pad)

    @torch.no_grad()
    def refine_one(self, prompt: str) -> str:
        """The refined prompt; the original one when the model produces nothing but whitespace."""
        templated = bool(getattr(self.tokenizer, "chat_template", None))
        # a chat template writes its own BOS; a plain layout gets the tokenizer's usual special tokens
        inputs = self.tokenizer(self.chat_text(prompt), return_tensors="pt", add_special_tokens=not templated)
        ids = inputs["input_ids"].to(self.device)
        mask = inputs["attention_mask"].to(self.device)
        out = self.model.generate(input_ids=ids, attention_mask=mask, generation_config=self._generation_config())
        text = self.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
        return text or prompt

    def refine(self, prompts: Union[str, Sequence[str]]) -> Union[str, List[str]]:
        """Refine one prompt (str -> str) or several, one at a time (list -> list)."""
        if isinstance(prompts, str):
            return self.refine_one(prompts)
        return [self.refine_one(p) for p in prompts]

    __call__ = refine
