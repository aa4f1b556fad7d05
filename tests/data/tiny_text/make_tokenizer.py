"""Builds the tiny test tokenizer in this folder (offline; reruns agree up to the last digits of the
piece scores): ``python make_tokenizer.py``.

A T5-style tokenizer: Unigram model over Metaspace pieces, ``<pad>`` = 0, ``</s>`` = 1 (appended to every
sequence), ``<unk>`` = 2, whitespace runs collapsed as sentencepiece does. It is saved as a
``PreTrainedTokenizerFast`` folder so that ``AutoTokenizer.from_pretrained(folder)`` loads it like a real one.
The tests build tiny random encoders (T5, CLIP-like, BERT-like, causal LMs) on top of its vocabulary.
"""
import os
import string

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

VOCAB_SIZE = 320
SPECIALS = ["<pad>", "</s>", "<unk>"]

CORPUS = [
    "a cat playing the piano in a sunny living room",
    "a dog is running on the beach at sunset, waves rolling in",
    "an astronaut riding a horse on the moon, cinematic lighting",
    "a drone shot of a city at night with neon lights and rain",
    "close-up of a flower blooming in time lapse, soft focus",
    "a red car driving along a mountain road in autumn",
    "two people walking in a park under cherry blossom trees",
    "a small boat sailing across a calm lake at dawn",
    "high quality, high aesthetic, detailed, sharp, smooth motion",
    "nsfw, lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, cropped",
    "worst quality, low quality, normal quality, jpeg artifacts, signature, watermark, username, blurry",
    "Refine the sentence to contain subject description, action, scene description.",
    "camera language, light and shadow, atmosphere, additional actions, a fluent sentence, not nonsense",
    "You are a caption refiner. The camera slowly pans to the right as the light fades.",
    "0 1 2 3 4 5 6 7 8 9 " + string.ascii_letters + " " + string.punctuation,
]


def build() -> Tokenizer:
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIALS, unk_token="<unk>",
                                      initial_alphabet=list(string.ascii_letters + string.digits + string.punctuation),
                                      show_progress=False)
    tok.train_from_iterator(CORPUS * 4, trainer)
    eos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", eos)])
    return tok


def main(folder: str = os.path.dirname(os.path.abspath(__file__))) -> None:
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=build(), pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=512, padding_side="right")
    fast.save_pretrained(folder)


if __name__ == "__main__":
    main()
