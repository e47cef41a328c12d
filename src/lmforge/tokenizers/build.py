"""Build Hugging Face fast tokenizers: a trained byte-level BPE, or plain bytes (no training).

Both are byte-level, so every string round-trips exactly, and both are saved as a directory that
`transformers.AutoTokenizer.from_pretrained(dir)` loads offline.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from lmforge import signals
from lmforge.atomic import publish_dir, write_bytes
from lmforge.errors import Stopped, UserError
from lmforge.tokenizers.fast import byte_alphabet

EOS = "<|endoftext|>"
PAD = "<|pad|>"
SPECIALS = [EOS, PAD]
MIN_BPE_VOCAB = 256 + len(SPECIALS)


def _byte_level(model: models.Model) -> Tokenizer:
    """A tokenizer with byte-level pre-tokenization and decoding around `model`."""
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def wrap(tok: Tokenizer, **config) -> PreTrainedTokenizerFast:
    """Wrap a raw `tokenizers.Tokenizer` as a transformers fast tokenizer with our special tokens;
    `config` goes into its tokenizer_config.json (e.g. the vocab size asked of a BPE)."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS,
        eos_token=EOS,
        pad_token=PAD,
        clean_up_tokenization_spaces=False,
        **config,
    )


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, out_dir: str | Path) -> Path:
    """`save_pretrained` atomically: a new directory appears whole; into an existing one (e.g. a
    model directory) each tokenizer file is replaced atomically and the other files stay."""
    out_dir = Path(out_dir)
    try:
        if not out_dir.exists():
            with publish_dir(out_dir) as tmp:
                tokenizer.save_pretrained(str(tmp))
            return out_dir
        with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.") as tmp:
            tokenizer.save_pretrained(tmp)
            for f in sorted(Path(tmp).iterdir()):
                write_bytes(out_dir / f.name, f.read_bytes())
    except OSError as e:
        raise UserError(f"{out_dir}: cannot save tokenizer: {e}") from e
    return out_dir


def check_bpe_vocab(vocab_size: int) -> None:
    """A byte-level BPE holds at least the 256 bytes and the specials: a smaller vocab_size is one line."""
    if vocab_size < MIN_BPE_VOCAB:
        raise UserError(f"tokenizer.vocab_size={vocab_size}: must be at least {MIN_BPE_VOCAB} (256 bytes + specials)")


def train_bpe(texts: Iterable[str], vocab_size: int, out_dir: str | Path) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE of `vocab_size` entries (specials included) on `texts`; save to `out_dir`."""
    check_bpe_vocab(vocab_size)
    tok = _byte_level(models.BPE())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    _interruptible(lambda: tok.train_from_iterator(texts, trainer=trainer),
                   "{} while training the BPE tokenizer (nothing was saved; the next launch trains it anew)")
    wrapped = wrap(tok, lmforge_vocab_size=vocab_size)
    save_tokenizer(wrapped, out_dir)
    return wrapped


TRAINING_THREAD = "lmforge-bpe"  # the thread that trains, by this name in `top -H` and /proc/<pid>/task


def _name_os_thread(name: str) -> None:
    """Give the calling thread `name` in the OS too (Linux; Python 3.11 names only its own object), so that
    minutes of BPE training show as such in top and py-spy, and a test can see that training is under way."""
    import ctypes

    try:
        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # 15: PR_SET_NAME
    except (OSError, AttributeError):  # no prctl (macOS): the name stays Python's own
        pass


def _interruptible(work, message: str) -> None:
    """Run `work` in a daemon thread and wait for it. Ctrl-C or SIGTERM then stops the wait at once: BPE
    training runs in Rust, where the main thread would see the signal only after the whole training
    (minutes on a large corpus). The thread is left behind; the process is about to exit. `message` is
    the line, with {} for "interrupted" or "preempted"."""
    failure: list[BaseException] = []

    def run() -> None:
        _name_os_thread(TRAINING_THREAD)
        try:
            work()
        except BaseException as e:  # noqa: BLE001 - re-raised in the waiting thread
            failure.append(e)

    thread = threading.Thread(target=run, name=TRAINING_THREAD, daemon=True)
    thread.start()
    try:
        while thread.is_alive():  # woken often: a signal that reached another thread is seen here too
            thread.join(0.1)
    except (KeyboardInterrupt, signals.Signalled) as exc:
        status, word = signals.stop_of(exc)
        signals.skip_shutdown = True  # Rust threads left running would abort it ("exception not rethrown")
        raise Stopped(status, message.format(word)) from None
    if failure:
        raise failure[0]


def byte_tokenizer(out_dir: str | Path) -> PreTrainedTokenizerFast:
    """A byte tokenizer (id = byte value, then the specials): a byte-level BPE with no merges."""
    vocab = {ch: b for b, ch in enumerate(byte_alphabet())}
    vocab.update({s: 256 + i for i, s in enumerate(SPECIALS)})
    tok = _byte_level(models.BPE(vocab=vocab, merges=[]))
    wrapped = wrap(tok)
    save_tokenizer(wrapped, out_dir)
    return wrapped
