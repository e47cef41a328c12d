"""lmforge's model for EleutherAI's lm-evaluation-harness (`lm_eval`), registered as "lmforge".

It scores any lmforge language-model run as loaded by `lmforge.experiment.load.load_model` (native
GPT/Llama/Qwen3 layouts, `transformers` models, LoRA runs) with no export step:
`lm_eval --model lmforge --model_args pretrained=<run>` or `LMForgeLM(model=..., tokenizer=...)`.
Tokenization, empty contexts (scored after the bos token, else eos), truncation, batching order and
stop sequences follow lm-eval's own `hf` model, so both give the same numbers on an exported run;
generation runs batched through the model's KV cache (lmforge.evaluation.decoding). Under
torch.distributed each rank scores its share of the requests (lm-eval splits them by `rank`).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from lm_eval import utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import (
    Collator,
    handle_stop_sequences,
    has_bos_prefix,
    normalize_gen_kwargs,
    postprocess_generated_text,
)
from lm_eval.models.utils_hf import pad_and_concat

from lmforge.evaluation.decoding import decode_batch, greedy, sampler
from lmforge.models.contract import context_length, unwrap

DEFAULT_MAX_LENGTH = 2048  # lm-eval's own default for a model that states no context


@register_model("lmforge")
class LMForgeLM(TemplateLM):
    """A causal LM and its tokenizer; `pretrained=<run, .ckpt or model dir>` loads them."""

    def __init__(self, pretrained: Optional[str] = None, model: Optional[torch.nn.Module] = None,
                 tokenizer: Any = None, batch_size: int | str = 8, max_length: Optional[int] = None,
                 max_gen_toks: int = 256, device: Optional[str] = None, **_: Any) -> None:
        super().__init__()
        if model is None:
            from lmforge.experiment.load import load_model

            model, tokenizer, _config = load_model(pretrained, causal=True)
        if device:
            model = model.to(device)
        self.model = unwrap(model)  # a torch.compile'd model would recompile for every length
        self.tokenizer = tokenizer
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 8
        self._max_length = max_length
        self.max_gen_toks = max_gen_toks
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    # -- what lm-eval asks of a model -----------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        """What an empty context becomes: bos, else eos (as lm-eval's `hf` model)."""
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length or context_length(self.model) or DEFAULT_MAX_LENGTH

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def rank(self) -> int:
        return torch.distributed.get_rank() if distributed() else 0

    @property
    def world_size(self) -> int:
        return torch.distributed.get_world_size() if distributed() else 1

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        if not distributed():
            return tensor[None] if tensor.dim() == 0 else tensor
        parts = [torch.zeros_like(tensor) for _ in range(self.world_size)]
        torch.distributed.all_gather(parts, tensor)
        return torch.stack(parts) if tensor.dim() == 0 else torch.cat(parts)

    def gather_object(self, obj, dst: int = 0):
        if not distributed():
            return [obj]
        gathered = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, obj)
        return gathered if self.rank == dst else None

    def barrier(self) -> None:
        if distributed():
            torch.distributed.barrier()

    @property
    def tokenizer_name(self) -> str:
        # getattr: a Hugging Face tokenizer has name_or_path, lmforge's own byte/BPE wrappers may not
        return getattr(self.tokenizer, "name_or_path", "lmforge").replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: Optional[bool] = None, left_truncate_len=None,
                   **kwargs: Any) -> list[int]:
        special = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        if add_special_tokens is None and has_bos_prefix(string, self.tokenizer.decode(self.prefix_token_id)):
            special = {"add_special_tokens": False}
        encoding = self.tokenizer.encode(string, **special)
        return encoding[-left_truncate_len:] if left_truncate_len else encoding

    def tok_decode(self, tokens, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    # -- scoring ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _logits(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=batch).logits

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: Optional[int] = None):
        """(sum of log-probabilities of the continuation, whether greedy decoding gives it) per request."""
        def longest_first(req):
            tokens = req[1] + req[2]
            return -len(tokens), tuple(tokens)

        order = Collator(requests, sort_fn=longest_first, group_by="contexts",
                         group_fn=lambda req: req[-2] + req[-1][:-1])
        results = []
        for chunk in order.get_batched(n=override_bs or self.batch_size):
            inputs, lengths = [], []
            for _, context, continuation in chunk:
                # the last max_length + 1 tokens; the last one is only predicted
                tokens = torch.tensor((context + continuation)[-(self.max_length + 1):][:-1], dtype=torch.long,
                                      device=self.device)
                inputs.append(tokens)
                lengths.append(len(tokens))
            width = max(lengths)
            logprobs = F.log_softmax(self._logits(pad_and_concat(width, inputs, padding_side="right")), dim=-1)
            for (request, context, continuation), full, length in zip(chunk, logprobs, lengths):
                scored = full[length - len(continuation):length][None]  # [1, continuation, vocab]
                greedy_tokens = scored.argmax(-1)
                # requests that differ only in their last token share these log-probabilities
                for each, cont, rows in order.get_cache(req_str=request, cxt_toks=context,
                                                        cont_toks=continuation, logits=scored):
                    cont = torch.tensor(cont, dtype=torch.long, device=self.device)[None]
                    is_greedy = bool((greedy_tokens[:, -cont.shape[1]:] == cont).all())
                    answer = (float(torch.gather(rows, 2, cont[..., None]).sum()), is_greedy)
                    results.append(answer)
                    if each is not None:
                        self.cache_hook.add_partial("loglikelihood", each, answer)
        return order.get_original(results)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """The log-likelihood of each whole text, in windows of the model's context (lm-eval's rolling
        windows, the first after the prefix token)."""
        windows, owners = [], []
        for index, (text,) in enumerate(req.args for req in requests):
            for window in utils.get_rolling_token_windows(token_list=self.tok_encode(text),
                                                          prefix_token=self.prefix_token_id,
                                                          max_seq_len=self.max_length, context_len=1):
                windows.append((None, *utils.make_disjoint_window(window)))
                owners.append(index)
        padding = 0
        if self.world_size > 1:  # every rank runs as many batches (lm-eval pads the same way)
            counts = self.all_gather(torch.tensor(len(windows), device=self.device)).tolist()
            padding = max(counts) - len(windows)
            windows += padding * windows[:1]
        scores = []
        for start in range(0, len(windows), self.batch_size):
            batch = windows[start:start + self.batch_size]
            scores += [score for score, _ in self._loglikelihood_tokens(batch, override_bs=len(batch))]
        totals = [0.0] * len(requests)
        for owner, score in zip(owners, scores[:len(scores) - padding]):
            totals[owner] += score
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Continuations, cut at the first stop sequence (eos among them), batched by generation settings."""
        order = Collator([req.args for req in requests], sort_fn=lambda req: (-len(self.tok_encode(req[0])), req[0]),
                         group_by="gen_kwargs", group_fn=lambda req: req[1])
        eos = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        results = []
        for chunk in order.get_batched(n=self.batch_size):
            contexts, all_kwargs = zip(*chunk)
            kwargs = normalize_gen_kwargs(all_kwargs[0], self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_new = kwargs.pop("max_gen_toks")
            room = self.max_length - max_new
            if room <= 0:
                raise ValueError(f"max_gen_toks={max_new} leaves no room for a context in the model's "
                                 f"{self.max_length} positions")
            prompts = [self.tok_encode(context)[-room:] or [self.prefix_token_id] for context in contexts]
            new = decode_batch(self.model, prompts, max_new, self.pad_token_id, self.eot_token_id,
                               pick=self._picker(kwargs), done=self._stopper(until))
            for context, tokens in zip(contexts, new):
                text = postprocess_generated_text(self.tok_decode(tokens), stop=until, think_end_token=None)
                results.append(text)
                self.cache_hook.add_partial("generate_until", (context, all_kwargs[0]), text)
        return order.get_original(results)

    def _stopper(self, until: list[str]):
        """`done(row, tokens)`: whether a row's text so far holds a stop sequence."""
        return lambda row, tokens: any(stop in self.tok_decode(tokens) for stop in until)

    def _picker(self, kwargs: dict):
        """Greedy unless the task samples (do_sample, or a temperature above 0)."""
        temperature = float(kwargs.get("temperature") or 0.0)
        if not kwargs.get("do_sample") and temperature <= 0:
            return greedy
        seed = kwargs.get("seed")
        generator = torch.Generator(device=self.device).manual_seed(int(seed)) if seed is not None else None
        return sampler(temperature or 1.0, kwargs.get("top_k"), kwargs.get("top_p"), generator)


def distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()
