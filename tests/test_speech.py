"""Speech: audio folders and manifests, resampling, bad files; a CTC recogniser and a classifier trained for a
few steps on spoken digits (espeak-ng), evaluated, exported and run by transformers' pipelines; resume and
preemption of an audio run."""

from __future__ import annotations

import csv
import json
import re
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from conftest import cli, lmforge, metrics, ok, one_line_error
from conftest import start as started
from lmforge.data.audio_files import decode
from lmforge.data.audio_folder import AudioFolderDataModule
from lmforge.data.speech_synth import spoken_digits
from lmforge.data.transcripts import normalise
from lmforge.errors import UserError
from test_resume import assert_same_run, killed_and_resumed

pytestmark = pytest.mark.xdist_group("speech")

WORDS = ("zero", "one", "two", "three")
FAST = ["data.sampling_rate=8000", "data.max_seconds=1.0", "data.batch_size=8", "trainer.limit_val_batches=1",
        "print_config=false", "logger=csv"]


def tone(path: Path, rate: int, seconds: float = 0.5, channels: int = 1, freq: float = 440.0) -> Path:
    t = np.arange(int(rate * seconds)) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    soundfile.write(str(path), np.stack([wave] * channels, axis=1) if channels > 1 else wave, rate)
    return path


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> dict[str, Path]:
    """The synthesised digits (words zero..three only): a manifest with text and a folder per class."""
    root = tmp_path_factory.mktemp("speech")
    full = spoken_digits(root / "cache")
    with open(full) as f:
        rows = [row for row in csv.DictReader(f) if row["label"] in WORDS]
    manifest = root / "digits.csv"
    with open(manifest, "w") as f:
        f.write("path,text\n" + "".join(f"{full.parent / r['path']},{r['text']}\n" for r in rows))
    folder = root / "folder"
    for r in rows:
        (folder / r["label"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(full.parent / r["path"], folder / r["label"] / r["path"])
    return {"manifest": manifest, "folder": folder, "root": root}


@pytest.fixture(scope="module")
def ctc_run(digits) -> dict[str, Path]:
    """A CTC run of 12 steps, the same model untrained (train=false), an eval and an export of the first."""
    root = digits["root"]
    args = ["experiment=speech_ctc", f"data.path={digits['manifest']}", *FAST]
    ok(cli("train", *args, "trainer.max_steps=12", "logger=tensorboard", f"hydra.run.dir={root / 'ctc'}", cwd=root))
    ok(cli("train", *args, "train=false", f"hydra.run.dir={root / 'untrained'}", cwd=root))
    ok(cli("eval", f"ckpt_path={root / 'ctc'}", f"hydra.run.dir={root / 'ctc_eval'}", cwd=root))
    ok(cli("export", f"ckpt_path={root / 'ctc'}", f"export_dir={root / 'asr'}", cwd=root))
    return {"run": root / "ctc", "untrained": root / "untrained", "eval": root / "ctc_eval", "export": root / "asr"}


@pytest.fixture(scope="module")
def clf_run(digits) -> dict[str, Path]:
    """A classifier of 10 steps on the class folder, its eval and export."""
    root = digits["root"]
    args = ["experiment=audio_classify", f"data.path={digits['folder']}", *FAST, "trainer.max_steps=10"]
    ok(cli("train", *args, f"hydra.run.dir={root / 'clf'}", cwd=root))
    ok(cli("eval", f"ckpt_path={root / 'clf'}", f"hydra.run.dir={root / 'clf_eval'}", cwd=root))
    ok(cli("export", f"ckpt_path={root / 'clf'}", f"export_dir={root / 'kws'}", cwd=root))
    return {"run": root / "clf", "eval": root / "clf_eval", "export": root / "kws"}


def rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


# ---- data -----------------------------------------------------------------------------------------


def test_a_class_folder_and_a_manifest_are_read_with_their_splits(digits, tmp_path: Path):
    folder = AudioFolderDataModule(path=str(digits["folder"]), sampling_rate=8000)
    folder.prepare_data()
    assert folder.kind == "label" and folder.labels == sorted(WORDS)
    assert folder.dims["num_labels"] == 4 and folder.dims["sampling_rate"] == 8000
    assert len(folder.test_paths()) > 0 and set(folder.test_references()) <= set(WORDS)
    batch = next(iter(folder.train_dataloader()))
    assert batch["input_values"].shape[0] == 16 and batch["labels"].dtype == torch.long
    assert batch["input_values"].shape[1] <= 2 * 8000  # cut to max_seconds

    manifest = AudioFolderDataModule(path=str(digits["manifest"]), sampling_rate=8000)
    manifest.prepare_data()
    assert manifest.kind == "text" and manifest.class_names is None
    vocab = manifest.tokenizer.get_vocab()
    assert set("zeronetwhr") <= set(vocab) and vocab["<pad>"] == 0  # the training transcripts' characters
    batch = next(iter(manifest.val_dataloader()))
    assert (batch["labels"] == -100).any() or batch["labels"].shape[1] == 5  # padded character ids

    # a JSONL manifest with explicit splits, and an LJSpeech metadata.csv (id|text|normalised, wavs/<id>.wav)
    clips = sorted(digits["folder"].rglob("*.wav"))[:6]
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text("".join(json.dumps({"path": str(p), "text": p.parent.name, "split": s}) + "\n"
                             for p, s in zip(clips, ["train"] * 4 + ["validation", "test"])))
    named = AudioFolderDataModule(path=str(jsonl), sampling_rate=8000)
    named.prepare_data()
    assert named.test_paths() == [str(clips[5])]
    lj = tmp_path / "LJ"
    (lj / "wavs").mkdir(parents=True)
    for i, p in enumerate(clips):
        shutil.copy(p, lj / "wavs" / f"LJ001-{i:04d}.wav")
    (lj / "metadata.csv").write_text("".join(f"LJ001-{i:04d}|Call {i}!|Call {i}!\n" for i in range(6)))
    ljspeech = AudioFolderDataModule(path=str(lj / "metadata.csv"), sampling_rate=8000, val_fraction=0.2,
                                     test_fraction=0.2)
    ljspeech.prepare_data()
    assert ljspeech.kind == "text" and all(ref.startswith("call ") for ref in ljspeech.test_references())


def test_transcripts_are_normalised():
    assert normalise("Call 911, Dr. O'Neil!") == "call nine hundred eleven dr o'neil"
    assert normalise("It cost $3.50 in 1,905.") == "it cost three point five zero in one thousand nine hundred five"


def test_a_16_khz_and_a_22_khz_file_give_the_same_length_at_the_model_rate(tmp_path: Path):
    a = decode(tone(tmp_path / "a.wav", 16000), 16000)
    b = decode(tone(tmp_path / "b.flac", 22050, channels=2), 16000)  # stereo FLAC: mixed down, resampled
    assert a.shape == b.shape == (8000,) and a.dtype == b.dtype == np.float32
    assert np.corrcoef(a[100:-100], b[100:-100])[0, 1] > 0.99  # the same tone


def test_bad_audio_is_one_line_naming_the_file_or_is_skipped(tmp_path: Path):
    for word in ("yes", "no"):
        (tmp_path / "clips" / word).mkdir(parents=True)
        for i in range(5):
            tone(tmp_path / "clips" / word / f"{i}.wav", 16000, freq=300 + 100 * i + (50 if word == "no" else 0))
    (tmp_path / "clips" / "yes" / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    soundfile.write(str(tmp_path / "clips" / "no" / "silent.wav"), np.zeros(4000, np.float32), 16000)
    soundfile.write(str(tmp_path / "clips" / "no" / "empty.wav"), np.zeros(0, np.float32), 16000)
    args = ["train", "experiment=audio_classify", f"data.path={tmp_path / 'clips'}", "print_config=false"]
    line = one_line_error(cli(*args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path))
    assert re.search(r"clips/(yes/broken\.wav: unreadable|no/silent\.wav: silent|no/empty\.wav: empty) audio", line)
    assert "data.on_bad_audio=skip" in line
    assert not (tmp_path / "run").exists()
    data = AudioFolderDataModule(path=str(tmp_path / "clips"), on_bad_audio="skip")
    data.prepare_data()
    assert len(data.skipped) == 3 and sum(len(data._load()[0][s]) for s in ("train", "val", "test")) == 10
    assert any("broken.wav: unreadable audio" in s for s in data.skipped)
    assert any("silent.wav: silent audio" in s for s in data.skipped)
    with pytest.raises(UserError, match="no such folder or manifest"):
        AudioFolderDataModule(path=str(tmp_path / "nowhere")).prepare_data()


# ---- recognition ------------------------------------------------------------------------------------


def test_ctc_training_lowers_cer_below_the_untrained_model(ctc_run):
    trained, untrained = metrics(ctc_run["run"]), metrics(ctc_run["untrained"])
    assert trained["test/cer"] < untrained["test/cer"]
    assert {"val/cer", "val/wer", "test/wer"} <= set(trained)
    assert (ctc_run["run"] / "tokenizer" / "vocab.json").is_file()


def test_eval_writes_per_clip_predictions_as_the_run_did(ctc_run):
    evaluated = rows(ctc_run["eval"] / "predictions.csv")
    assert list(evaluated[0]) == ["path", "reference", "hypothesis", "wer"]
    assert evaluated == rows(ctc_run["run"] / "predictions.csv")
    assert metrics(ctc_run["eval"])["test/cer"] == pytest.approx(metrics(ctc_run["run"])["test/cer"])


def test_each_validation_shows_reference_hypothesis_pairs_in_tensorboard(ctc_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(ctc_run["run"] / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    shown = events.Tensors("val/examples/text_summary")
    assert len(shown) == len(events.Scalars("val/cer")) >= 1  # one table per validation
    table = shown[-1].tensor_proto.string_val[0].decode()
    assert table.startswith("| reference | hypothesis |") and len(table.splitlines()) == 2 + 3
    references = {row.split(" | ")[0].strip("| ") for row in table.splitlines()[2:]}
    assert references <= set(WORDS)


@pytest.mark.slow
def test_ctc_under_ddp_on_two_cpu_processes_transcribes_each_test_clip_once_as_one_process_does(digits):
    root = digits["root"]
    run, evaluated = root / "ctc_ddp", root / "ctc_ddp_eval"
    ok(lmforge("train", "experiment=speech_ctc", f"data.path={digits['manifest']}", *FAST, "trainer=ddp_cpu",
               "trainer.max_steps=4", f"hydra.run.dir={run}", cwd=root))
    ok(cli("eval", f"ckpt_path={run}", f"hydra.run.dir={evaluated}", cwd=root))  # one process, the same weights
    by_ranks, alone = rows(run / "predictions.csv"), rows(evaluated / "predictions.csv")
    assert by_ranks == alone and len({r["path"] for r in by_ranks}) == len(by_ranks) >= 4
    assert metrics(run)["test/cer"] == pytest.approx(metrics(evaluated)["test/cer"])


def test_the_asr_pipeline_transcribes_the_export_as_eval_did(ctc_run):
    from transformers import pipeline

    asr = pipeline("automatic-speech-recognition", model=str(ctc_run["export"]))
    for row in rows(ctc_run["eval"] / "predictions.csv"):
        heard = asr({"raw": decode(row["path"], 8000), "sampling_rate": 8000})["text"]
        assert heard == row["hypothesis"], row["path"]


# ---- classification ---------------------------------------------------------------------------------


def test_the_audio_classification_pipeline_agrees_with_eval(clf_run):
    from transformers import pipeline

    predictions = rows(clf_run["eval"] / "predictions.csv")
    assert list(predictions[0]) == ["path", "label", "prediction", "probability"]
    assert {"test/acc", "test/f1", "test/f1/zero"} <= set(metrics(clf_run["run"]))
    classify = pipeline("audio-classification", model=str(clf_run["export"]), top_k=1)
    for row in predictions:  # evaluation hears a clip's first data.max_seconds (1.0 here), as the pipeline does
        best = classify({"raw": decode(row["path"], 8000)[:8000], "sampling_rate": 8000})[0]
        assert best["label"] == row["prediction"]
        assert best["score"] == pytest.approx(float(row["probability"]), abs=1e-4)


def test_a_recogniser_starts_from_a_classifier_run_with_a_new_head(clf_run, digits):
    root = digits["root"]
    run = root / "from_clf"
    ok(cli("train", "experiment=speech_ctc", f"data.path={digits['manifest']}", *FAST, "trainer.max_steps=1",
           "test=false", f"init_from={clf_run['run']}", f"hydra.run.dir={run}", cwd=root))
    assert json.loads((run / "run.json").read_text())["parent"]["init_from"] == str(clf_run["run"])
    parent = torch.load(clf_run["run"] / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    child = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert "model.lm_head.weight" in child and "model.classifier.weight" in parent
    key = "model.wav2vec2.feature_extractor.conv_layers.0.conv.weight"
    assert child[key].shape == parent[key].shape


# ---- resume and preemption ----------------------------------------------------------------------------


@pytest.mark.slow
def test_an_audio_run_killed_and_resumed_equals_the_straight_run_and_sigterm_preempts_it(digits, tmp_path: Path):
    args = ["experiment=audio_classify", f"data.path={digits['folder']}", *FAST, "data.batch_size=4",
            "trainer.max_steps=14", "model.mask_time_prob=0.2", "model.dropout=0.1", "checkpoint.every_n_steps=2",
            "trainer.log_every_n_steps=1", "test=false"]
    ok(lmforge("train", *args, f"hydra.run.dir={tmp_path / 'straight'}", cwd=tmp_path))
    # kill -9 mid-run, resume=auto: masking, dropout, order and cuts as in the uninterrupted run
    killed_and_resumed(args, tmp_path / "killed", tmp_path, kills=1, seed=4, max_delay=0.5)
    assert_same_run(tmp_path / "straight", tmp_path / "killed", "last.ckpt")
    # SIGTERM: a checkpoint at the next step, status preempted, exit 143; resume=auto finishes the run
    run = tmp_path / "stopped"
    proc = started(["train", *args, f"hydra.run.dir={run}"], tmp_path)
    while proc.poll() is None and not list((run / "checkpoints").glob("step-*.ckpt")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-3000:]
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "preempted" and (run / "checkpoints" / f"step-{info['global_step']:07d}.ckpt").is_file()
    ok(lmforge("train", *args, f"hydra.run.dir={run}", "resume=auto", cwd=tmp_path))
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["global_step"] == 14
