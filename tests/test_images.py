"""Image classification on the same machinery: a folder of class subfolders or a manifest, bad images
named or skipped, fine-tuning from a run with another label set (full, frozen body, LoRA), the export
read by transformers' image-classification pipeline with the same top-1 as `lmforge eval`, and an
image run stopped by SIGTERM that resumes to the same weights as one never stopped."""

from __future__ import annotations

import csv
import json
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import cli, csv_metric, lmforge, metrics, ok, one_line_error
from test_preemption import start, wait_for_training
from test_resume import weights

pytestmark = pytest.mark.xdist_group("images")

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 60, 230)}
# Small and quick: 16x16 images, a ResNet of ~20K parameters.
SMALL = ["data.image_size=16", "data.batch_size=16", "model.embedding_size=8",
        "model.hidden_sizes=[8,16,32,64]", "print_config=false", "scheduler.warmup_steps=2"]
TINY = ["experiment=image_classify", *SMALL]


def draw(path: Path, colour: tuple[int, int, int], wide: bool, rng: np.random.Generator) -> None:
    """A rectangle of `colour` (wide or tall) at a random place on grey noise, 20x20, PNG or JPEG by suffix."""
    canvas = rng.integers(90, 160, (20, 20, 3)).astype(np.uint8)
    h, w = (5, 12) if wide else (12, 5)
    top, left = rng.integers(0, 20 - h), rng.integers(0, 20 - w)
    canvas[top:top + h, left:left + w] = np.clip(np.array(colour) + rng.integers(-20, 20, 3), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(path)


def colour_folder(root: Path, per_class: int = 24, seed: int = 0) -> Path:
    """Three classes by colour (red, green, blue), a mix of PNG and JPEG files."""
    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        for i in range(per_class):
            draw(root / name / f"{i:03d}.{'png' if i % 3 else 'jpg'}", colour, bool(i % 2), rng)
    return root


def shape_folder(root: Path, per_class: int = 24) -> Path:
    """Two other classes, by shape in any colour: wide and tall rectangles."""
    rng = np.random.default_rng(1)
    for name in ("wide", "tall"):
        for i in range(per_class):
            draw(root / name / f"{i:03d}.png", tuple(int(c) for c in rng.integers(0, 255, 3)), name == "wide", rng)
    return root


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("images")


@pytest.fixture(scope="module")
def trained(work: Path) -> Path:
    """One run shared by most tests: 3 epochs on the colour folder."""
    folder = colour_folder(work / "colours")
    run = work / "run"
    ok(cli("train", *TINY, f"data.path={folder}", "trainer.max_epochs=3", f"hydra.run.dir={run}",
           f"paths.cache_dir={work / 'cache'}", cwd=work))
    return run


def predictions(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_folder_of_class_subfolders_trains_tests_and_writes_predictions(trained: Path):
    result = metrics(trained)
    assert result["best/val/acc"] >= 0.8 and result["test/acc"] > 0.5, result  # chance: 0.33
    assert result["test/top5"] == 1.0  # three classes: always among the top five
    assert {f"test/f1/{name}" for name in COLOURS} <= set(result)
    rows = predictions(trained / "predictions.csv")
    assert list(rows[0]) == ["path", "label", "prediction", "probability"]
    # the per-class split: 10 % of each class's files is test
    assert sorted({r["label"] for r in rows}) == sorted(COLOURS) and len(rows) == 3 * 2
    assert all(Path(r["path"]).is_file() and Path(r["path"]).parent.name == r["label"] for r in rows)
    assert all(0 < float(r["probability"]) <= 1 for r in rows)
    stats = json.loads((trained / "processor" / "preprocessor_config.json").read_text())
    assert stats["size"] == {"height": 16, "width": 16} and len(stats["image_mean"]) == 3


def test_a_manifest_with_a_split_column_decides_the_splits(trained: Path, work: Path):
    folder = work / "colours"
    manifest = work / "manifest.csv"
    files = sorted(folder.rglob("*.*"))
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split"])
        for i, file in enumerate(files):
            writer.writerow([file.relative_to(work), file.parent.name, ("train", "train", "val", "test")[i % 4]])
    run = work / "from_manifest"
    ok(cli("train", *TINY, f"data.path={manifest}", "trainer.max_steps=2", f"hydra.run.dir={run}",
           f"paths.cache_dir={work / 'cache'}", cwd=work))
    tested = [Path(r["path"]) for r in predictions(run / "predictions.csv")]
    assert tested == [file for i, file in enumerate(files) if i % 4 == 3]


def test_a_bad_image_is_named_in_one_line_or_counted_and_skipped(trained: Path, work: Path):
    folder = colour_folder(work / "with_bad", per_class=8)
    (folder / "red" / "broken.png").write_bytes(b"not a png at all")
    args = [*TINY, f"data.path={folder}", "trainer.max_steps=1", f"paths.cache_dir={work / 'cache'}"]
    line = one_line_error(cli("train", *args, f"hydra.run.dir={work / 'bad'}", cwd=work))
    assert "broken.png" in line and "not an image" in line
    proc = ok(cli("train", *args, "data.on_bad_image=skip", f"hydra.run.dir={work / 'skipped'}", cwd=work))
    log = proc.stdout + proc.stderr + (work / "skipped" / "train.log").read_text()
    assert "skipped 1 of 25 image files" in log and "broken.png" in log


def test_randaugment_draws_from_seed_epoch_and_index_and_a_run_trains_with_it(trained: Path, work: Path):
    from lmforge.data.image_folder import ImageFolderDataModule
    from lmforge.data.rand_augment import OPERATIONS

    def train_images(ops: int, seed: int = 0) -> torch.Tensor:
        data = ImageFolderDataModule(path=str(work / "colours"), image_size=16, crop_scale=(1.0, 1.0), hflip=0.0,
                                     randaugment_ops=ops, randaugment_magnitude=15, cache_dir=str(work / "cache"))
        data.run_seed = seed
        data.setup()
        dataset = data._sets["train"]
        return torch.stack([dataset[tagged]["pixel_values"] for tagged in (0, 1, len(dataset) + 1)])

    plain, augmented = train_images(0), train_images(2)
    assert torch.equal(augmented, train_images(2))  # a function of (seed, epoch, index): resume sees the same
    assert not torch.equal(augmented[0], plain[0]) and not torch.equal(augmented[1], augmented[2])  # epoch 0 vs 1
    assert not torch.equal(augmented, train_images(2, seed=1))
    image = Image.open(next((work / "colours" / "red").glob("*.png"))).convert("RGB")
    for name, (operation, _) in OPERATIONS.items():  # each operation (but identity) changes an image
        changed = np.asarray(operation(image, 1.0))
        assert changed.shape == (20, 20, 3) and (name == "identity") == np.array_equal(changed, np.asarray(image)), name

    args = [*TINY, f"data.path={work / 'colours'}", "trainer.max_steps=3", f"paths.cache_dir={work / 'cache'}"]
    line = one_line_error(cli("train", *args, "data.randaugment_magnitude=31", cwd=work))
    assert "data.randaugment_magnitude" in line
    ok(cli("train", *args, "data.randaugment_ops=2", f"hydra.run.dir={work / 'randaugment'}", cwd=work))
    assert metrics(work / "randaugment")["test/acc"] >= 0


def test_fine_tuning_from_the_run_takes_its_weights_and_normalisation_with_a_new_head(trained: Path, work: Path):
    shapes = shape_folder(work / "shapes")
    child = work / "child"
    ok(cli("train", "experiment=image_finetune", *SMALL, f"init_from={trained}", f"data.path={shapes}",
           "trainer.max_epochs=2", "finetune=freeze", f"hydra.run.dir={child}", f"paths.cache_dir={work / 'cache'}",
           cwd=work))
    assert json.loads((child / "run.json").read_text())["parent"]["init_from"] == str(trained)
    assert {r["label"] for r in predictions(child / "predictions.csv")} <= {"wide", "tall"}
    parent_stats = json.loads((trained / "processor" / "preprocessor_config.json").read_text())
    child_stats = json.loads((child / "processor" / "preprocessor_config.json").read_text())
    assert child_stats["image_mean"] == parent_stats["image_mean"]  # the parent's, not the shapes'
    # finetune=freeze: the body is the parent's, bit for bit; the head is new, for two classes
    before = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    after = torch.load(child / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    body = [k for k in after if "classifier" not in k and "num_batches_tracked" not in k and "running" not in k]
    assert body and all(torch.equal(before[k], after[k]) for k in body)
    assert after["model.classifier.1.weight"].shape[0] == 2


@pytest.mark.parametrize("model", ["vit_tiny", "convnext_tiny"])
def test_lora_on_a_vision_model_exports_merged_for_the_pipeline(model: str, trained: Path, work: Path):
    from transformers import AutoModelForImageClassification, pipeline

    base = work / f"{model}_base"
    ok(cli("train", "experiment=image_classify", f"model={model}", "data.image_size=16", "data.batch_size=16",
           f"data.path={work / 'colours'}", "trainer.max_steps=2", "print_config=false", f"hydra.run.dir={base}",
           f"paths.cache_dir={work / 'cache'}", cwd=work))
    tuned = work / f"{model}_lora"
    ok(cli("train", "experiment=image_finetune", f"model={model}", f"init_from={base}", "finetune=lora",
           f"data.path={work / 'shapes'}", "data.image_size=16", "data.batch_size=16", "trainer.max_steps=2", "print_config=false",
           f"hydra.run.dir={tuned}", f"paths.cache_dir={work / 'cache'}", cwd=work))
    out = work / f"{model}_export"
    ok(cli("export", f"ckpt_path={tuned}", f"export_dir={out}", cwd=work))
    loaded = AutoModelForImageClassification.from_pretrained(out)
    assert not any("lora" in name for name, _ in loaded.named_parameters())
    assert set(loaded.config.id2label.values()) == {"wide", "tall"}
    labels = {p["label"] for p in pipeline("image-classification", model=str(out))(str(work / "shapes" / "wide" / "000.png"))}
    assert labels == {"wide", "tall"}


def test_the_exported_classifier_in_a_pipeline_agrees_with_lmforge_eval(trained: Path, work: Path):
    from transformers import pipeline

    evaluated = work / "eval"
    ok(cli("eval", f"ckpt_path={trained}", f"hydra.run.dir={evaluated}", cwd=work))
    rows = predictions(evaluated / "predictions.csv")
    assert rows == predictions(trained / "predictions.csv")
    out = work / "export"
    ok(cli("export", f"ckpt_path={trained}", f"export_dir={out}", cwd=work))
    assert (out / "preprocessor_config.json").is_file()
    answers = pipeline("image-classification", model=str(out))([r["path"] for r in rows], top_k=1)
    assert [a[0]["label"] for a in answers] == [r["prediction"] for r in rows]
    assert [a[0]["score"] for a in answers] == pytest.approx([float(r["probability"]) for r in rows], abs=1e-4)


@pytest.mark.slow
def test_an_image_run_stopped_by_sigterm_resumes_to_the_same_weights(trained: Path, work: Path):
    args = [*TINY, f"data.path={work / 'colours'}", "trainer.max_epochs=20", "data.hflip=0.5",
            "checkpoint.every_n_steps=4", "trainer.log_every_n_steps=1", "logger=csv", "callbacks=minimal",
            f"paths.cache_dir={work / 'cache'}"]
    ok(cli("train", *args, f"hydra.run.dir={work / 'straight'}", cwd=work))
    stopped = work / "stopped"
    proc = start([*args, f"hydra.run.dir={stopped}"], work)
    wait_for_training(stopped, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    step = json.loads((stopped / "run.json").read_text())["global_step"]
    assert 0 < step < 80 and "preempted at step" in err
    ok(cli("train", *args, f"hydra.run.dir={stopped}", "resume=auto", cwd=work))
    # the same weights, bit for bit, and the same loss at every step, each logged once (the stopped run
    # also validated when it stopped: its val/loss has one more entry)
    final = [weights(run / "checkpoints" / "step-0000080.ckpt") for run in (work / "straight", stopped)]
    assert final[0].keys() == final[1].keys()
    assert [k for k in final[0] if not torch.equal(final[0][k], final[1][k])] == []
    assert csv_metric(stopped, "train/loss") == csv_metric(work / "straight", "train/loss")
    assert len(csv_metric(stopped, "train/loss")) == 80  # 20 epochs of 4 batches (60 images), each step once


def test_each_validation_shows_images_with_label_and_prediction_in_tensorboard_and_wandb(work: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = work / "shown"
    ok(cli("train", *TINY, f"data.path={work / 'colours'}", "trainer.max_epochs=2", "logger=many",
           f"hydra.run.dir={run}", f"paths.cache_dir={work / 'cache'}", cwd=work))
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    images = events.Images("val/examples")
    assert [image.step for image in images] == [s.step for s in events.Scalars("val/acc")] and len(images) == 2
    captions = events.Tensors("val/examples/text_summary")[-1].tensor_proto.string_val[0].decode()
    shown = [row.split(" | ")[1].strip("| ") for row in captions.splitlines()[2:]]
    assert 4 <= len(shown) <= 8 and all(label in COLOURS and predicted in COLOURS  # the first batch's, up to 8
                                        for label, predicted in (caption.split(" -> ") for caption in shown))
    assert (images[-1].width, images[-1].height) == (16 * len(shown), 16)  # in a row, each as the model saw it
    wandb_images = list((run / "wandb").glob("offline-run-*/files/media/images/val/examples_*.png"))
    assert len(wandb_images) == 2 * len(shown)
    assert Image.open(wandb_images[0]).size == (16, 16)


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_tests_every_image_once_as_one_process_does(trained: Path, work: Path):
    run, evaluated = work / "ddp", work / "ddp_eval"
    ok(lmforge("train", *TINY, f"data.path={work / 'colours'}", "trainer=ddp_cpu", "trainer.max_epochs=2",
               f"hydra.run.dir={run}", f"paths.cache_dir={work / 'cache'}", cwd=work))
    assert json.loads((run / "run.json").read_text())["global_step"] == 2 * 2  # 60 train images: 30 a rank, 2 batches
    ok(cli("eval", f"ckpt_path={run}", f"hydra.run.dir={evaluated}", cwd=work))  # one process, the same weights
    by_ranks, alone = predictions(run / "predictions.csv"), predictions(evaluated / "predictions.csv")
    assert [(r["path"], r["prediction"]) for r in by_ranks] == [(r["path"], r["prediction"]) for r in alone]
    assert len(by_ranks) == len(set(r["path"] for r in by_ranks)) == 6  # each test image once, in order
    assert [float(r["probability"]) for r in by_ranks] == pytest.approx([float(r["probability"]) for r in alone],
                                                                         abs=1e-5)


def test_eval_on_other_files_keeps_the_runs_classes(trained: Path, work: Path):
    two = colour_folder(work / "two_colours", per_class=10, seed=5)
    for extra in two.iterdir():
        if extra.name == "green":
            for file in extra.iterdir():
                file.unlink()
            extra.rmdir()
    ok(cli("eval", f"ckpt_path={trained}", f"data.path={two}", f"hydra.run.dir={work / 'eval_two'}", cwd=work))
    rows = predictions(work / "eval_two" / "predictions.csv")
    assert rows and {r["label"] for r in rows} <= {"red", "blue"}
    assert {r["prediction"] for r in rows} <= set(COLOURS)  # the run's three classes, not the data's two
