"""Object detection: COCO data (a file of one's own, the generated shapes, bad files), Conditional DETR trained by
`experiment=coco_detect`, its mAP against pycocotools' COCOeval, `lmforge eval`'s detections.json and
the exported model in transformers' object-detection pipeline. One short training run serves them all."""

from __future__ import annotations

import contextlib
import io
import json
import random
from pathlib import Path

import pytest
import torch

from conftest import cli, metrics, ok, one_line_error

pytestmark = pytest.mark.xdist_group("detection")

TINY = ["data.generated_images=40", "data.image_size=64", "data.batch_size=4", "model.d_model=32",
        "model.ffn_dim=64", "model.encoder_layers=1", "model.decoder_layers=1", "model.backbone_embedding_size=8",
        "model.backbone_hidden_sizes=[8,16]", "trainer.max_time=null", "print_config=false"]


@pytest.fixture(scope="module")
def detect(tmp_path_factory) -> dict[str, Path]:
    """A 2-epoch run of experiment=coco_detect on 40 generated images, its `lmforge eval` and its export."""
    root = tmp_path_factory.mktemp("detect")
    cache = root / "cache"
    ok(cli("train", "experiment=coco_detect", *TINY, "trainer.max_epochs=2", f"paths.cache_dir={cache}",
           f"hydra.run.dir={root / 'run'}", cwd=root))
    ok(cli("eval", f"ckpt_path={root / 'run'}", f"paths.cache_dir={cache}", f"hydra.run.dir={root / 'eval'}", cwd=root))
    ok(cli("export", f"ckpt_path={root / 'run'}", f"export_dir={root / 'export'}", f"paths.cache_dir={cache}",
           cwd=root))
    shapes = next((cache / "coco_shapes").iterdir())
    return {"run": root / "run", "eval": root / "eval", "export": root / "export", "shapes": shapes, "root": root}


def cocoeval_stats(instances: Path, detections: list[dict], image_ids: list[int]) -> list[float]:
    """pycocotools' own evaluation of `detections` against the instances file, on `image_ids`."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(instances))
        evaluation = COCOeval(truth, truth.loadRes(detections), "bbox")
        evaluation.params.imgIds = sorted(image_ids)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return [float(v) for v in evaluation.stats]


def test_a_run_logs_map_and_eval_writes_coco_detections(detect):
    train, evaluated = metrics(detect["run"]), metrics(detect["eval"])
    for name in ("val/map", "val/map_50", "val/map_75", "test/map", "test/map_50", "test/map_75"):
        assert 0.0 <= train[name] <= 1.0, name
    assert evaluated["test/map"] == pytest.approx(train["test/map"], abs=1e-9)
    detections = json.loads((detect["eval"] / "detections.json").read_text())
    instances = json.loads((detect["shapes"] / "instances.json").read_text())
    sizes = {image["id"]: (image["width"], image["height"]) for image in instances["images"]}
    test_ids = {d["image_id"] for d in detections}
    assert len(detections) == 8 * 3 * len(test_ids)  # Conditional DETR: every (query, class) pair of each image
    assert {d["category_id"] for d in detections} <= {1, 3, 7}  # the file's own (non-contiguous) ids
    assert all(0.0 <= d["score"] <= 1.0 and len(d["bbox"]) == 4 for d in detections)
    # boxes are in the original image's pixels (images of 96-160 px, resized to 64 for the model)
    assert max(d["bbox"][0] + d["bbox"][2] for d in detections) > 64 or max(sizes.values()) <= 64


def test_map_equals_pycocotools_cocoeval_of_the_detections_file(detect):
    detections = json.loads((detect["eval"] / "detections.json").read_text())
    stats = cocoeval_stats(detect["shapes"] / "instances.json", detections, [d["image_id"] for d in detections])
    got = metrics(detect["eval"])
    for name, value in zip(("test/map", "test/map_50", "test/map_75"), stats):
        assert got[name] == pytest.approx(value, abs=1e-6), name


@pytest.mark.parametrize("family", ["detr", "conditional_detr"])
def test_detections_are_what_the_familys_image_processor_post_processes(family: str):
    """Each family's detections (DETR: a query's best class by softmax; Conditional DETR: the best (query,
    class) pairs by sigmoid) equal what the image processor an export ships computes at no threshold."""
    from lmforge.data.coco import detr_image_processor
    from lmforge.models.detr import detections, detr, image_processor

    torch.manual_seed(0)
    model = detr(num_labels=3, family=family, d_model=32, ffn_dim=64, num_queries=8,
                 backbone_hidden_sizes=(8, 16), backbone_depths=(1, 1)).eval()
    with torch.no_grad():
        out = model(pixel_values=torch.rand(2, 3, 64, 64))
    sizes = torch.tensor([[48, 80], [64, 64]])
    processor = image_processor(model, detr_image_processor(64))
    assert type(processor).__name__ == {"detr": "DetrImageProcessorPil",
                                        "conditional_detr": "ConditionalDetrImageProcessorPil"}[family]
    theirs = processor.post_process_object_detection(out, threshold=0.0, target_sizes=sizes)
    ours = detections(model, out.logits, out.pred_boxes, sizes)
    assert [len(image["scores"]) for image in ours] == [8 if family == "detr" else 24] * 2  # 8 queries, 3 classes
    for mine, expected in zip(ours, theirs):
        torch.testing.assert_close(mine["boxes"], expected["boxes"], atol=1e-4, rtol=0)
        torch.testing.assert_close(mine["scores"], expected["scores"], atol=1e-6, rtol=0)
        assert mine["labels"].tolist() == expected["labels"].tolist()


def test_the_map_metric_equals_cocoeval_on_imperfect_detections(tmp_path: Path):
    """Jittered, mislabelled, missed and spurious boxes, a crowd region and a category nobody predicts:
    the metric's mAP, mAP@50 and mAP@75 are pycocotools' COCOeval's on the same JSON, to 1e-6."""
    from lmforge.modules.coco_map import CocoMeanAveragePrecision, xywh

    rng = random.Random(0)
    images, truth, found, preds, targets = [], [], [], [], []
    for image_id in range(1, 21):
        images.append({"id": image_id, "width": 200, "height": 150, "file_name": f"{image_id}.png"})
        boxes, labels, areas, crowd = [], [], [], []
        p_boxes, p_scores, p_labels = [], [], []
        for _ in range(rng.randint(1, 4)):
            x, y, w, h = rng.uniform(0, 120), rng.uniform(0, 90), rng.uniform(5, 80), rng.uniform(5, 60)
            label, is_crowd = rng.choice([1, 2, 5]), int(rng.random() < 0.1)
            boxes.append([x, y, w, h])
            labels.append(label)
            areas.append(w * h * 0.8)  # a mask's area, smaller than its box
            crowd.append(is_crowd)
            truth.append({"id": len(truth) + 1, "image_id": image_id, "category_id": label, "bbox": [x, y, w, h],
                          "area": w * h * 0.8, "iscrowd": is_crowd})
            if rng.random() < 0.8:  # found, roughly
                j = [rng.gauss(0, 4) for _ in range(4)]
                wrong = rng.random() < 0.15
                p_boxes.append([x + j[0], y + j[1], x + w + j[2], y + h + j[3]])
                p_labels.append(2 if wrong else label)
                p_scores.append(rng.random())
        for _ in range(rng.randint(0, 3)):  # spurious
            x, y = rng.uniform(0, 150), rng.uniform(0, 100)
            p_boxes.append([x, y, x + rng.uniform(5, 50), y + rng.uniform(5, 50)])
            p_labels.append(rng.choice([1, 2, 5, 9]))
            p_scores.append(rng.random())
        preds.append({"boxes": torch.tensor(p_boxes).reshape(-1, 4), "scores": torch.tensor(p_scores),
                      "labels": torch.tensor(p_labels, dtype=torch.long)})
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float64), "labels": torch.tensor(labels),
                        "area": torch.tensor(areas, dtype=torch.float64), "iscrowd": torch.tensor(crowd)})
        for box, score, label in zip(preds[-1]["boxes"].tolist(), preds[-1]["scores"].tolist(), p_labels):
            found.append({"image_id": image_id, "category_id": label, "bbox": xywh(box), "score": score})
    instances = tmp_path / "instances.json"
    instances.write_text(json.dumps({"images": images, "annotations": truth,
                                     "categories": [{"id": c, "name": str(c)} for c in (1, 2, 5, 9, 11)]}))
    metric = CocoMeanAveragePrecision("pycocotools")
    metric.update(preds[:7], targets[:7])
    metric.update(preds[7:], targets[7:])
    got = metric.compute()
    expected = cocoeval_stats(instances, found, list(range(1, 21)))
    assert 0.1 < expected[0] < 0.9 and 0.1 < expected[1] < 0.95  # scores with something to get wrong
    for i, name in enumerate(("map", "map_50", "map_75")):
        assert float(got[name]) == pytest.approx(expected[i], abs=1e-6), name


def matched(ours: list[tuple], theirs: list[tuple], close) -> None:
    """Every detection of `ours` pairs with its own one of `theirs` that `close` accepts, none left over: the
    same detections, in an order that may differ where two scores are equal to rounding (best first)."""
    left = list(theirs)
    for mine in ours:
        match = next((other for other in left if close(mine, other)), None)
        assert match is not None, (mine, left[:3])
        left.remove(match)
    assert not left, left[:3]


def test_the_exported_model_detects_in_the_transformers_pipeline_as_lmforge_eval(detect):
    from PIL import Image
    from transformers import pipeline

    detector = pipeline("object-detection", model=str(detect["export"]))
    names = {1: "rectangle", 3: "ellipse", 7: "triangle"}
    detections = json.loads((detect["eval"] / "detections.json").read_text())
    instances = json.loads((detect["shapes"] / "instances.json").read_text())
    files = {image["id"]: detect["shapes"] / "images" / image["file_name"] for image in instances["images"]}
    for image_id in sorted({d["image_id"] for d in detections})[:3]:
        ours = [(names[d["category_id"]], [x, y, x + w, y + h], d["score"])
                for d in detections if d["image_id"] == image_id for x, y, w, h in [d["bbox"]]]
        image = Image.open(files[image_id])
        inputs = detector.image_processor(images=[image], return_tensors="pt")
        with torch.no_grad():
            outputs = detector.model(**inputs)
        theirs = detector.image_processor.post_process_object_detection(
            outputs, threshold=0.0, target_sizes=[(image.height, image.width)])[0]
        labels = detector.model.config.id2label
        processed = [(labels[int(label)], box.tolist(), float(score))
                     for label, box, score in zip(theirs["labels"], theirs["boxes"], theirs["scores"])]
        matched(ours, processed, lambda a, b: a[0] == b[0] and abs(a[2] - b[2]) <= 1e-5
                and max(abs(p - q) for p, q in zip(a[1], b[1])) <= 1e-4)
        # The pipeline itself: labels by name, boxes in whole pixels.
        answered = [(a["label"], [a["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")], a["score"])
                    for a in detector(image, threshold=0.0)]
        matched(ours, answered, lambda a, b: a[0] == b[0] and abs(a[2] - b[2]) <= 1e-4 and all(
            abs(g - int(p)) <= (1 if abs(p - round(p)) < 1e-3 else 0) for p, g in zip(a[1], b[1])))


def write_instances(folder: Path, images: int = 12) -> Path:
    """A small COCO set of one's own (the generated drawing, at another seed) in `folder`."""
    from lmforge.data.shapes import write_shapes

    write_shapes(folder, images, seed=5)
    return folder / "instances.json"


def datamodule(args: list[str], cwd: Path):
    import lmforge
    from lmforge.experiment.build import build_datamodule

    config = lmforge.compose("train", ["experiment=coco_detect", f"paths.cache_dir={cwd / 'cache'}", *args])
    return build_datamodule(config)


def test_own_files_split_by_val_fraction_with_labels_mapped_and_boxes_scaled(tmp_path: Path):
    instances = write_instances(tmp_path / "own", 20)
    args = [f"data.annotations={instances}", f"data.images={tmp_path / 'own' / 'images'}", "data.val_fraction=0.25",
            "data.image_size=48"]
    data = datamodule(args, tmp_path)
    again = datamodule([*args, "seed=7"], tmp_path)  # another run seed: the same split
    assert data.dims == {"num_labels": 3, "labels": ["rectangle", "ellipse", "triangle"]}
    assert data.label_map.ids == (1, 3, 7) and data.label_map.category(2) == 7
    train, val = data.sets["train"], data.sets["val"]
    assert len(val) == 5 and len(train) == 15 and data.sets["test"] is val
    assert [val.images[r].id for r in val.rows] == [again.sets["val"].images[r].id for r in again.sets["val"].rows]
    assert not {train.images[r].id for r in train.rows} & {val.images[r].id for r in val.rows}
    # each box, scaled to the resized image, is on its shape: shapes are drawn in colours of 130-255 per channel
    # on backgrounds of 0-89, and a rectangle's or ellipse's centre is inside it
    raw = json.loads(instances.read_text())
    for i in range(len(train)):
        pixels, target = train[i]
        assert pixels.shape == (3, 48, 48) and pixels.dtype == torch.uint8
        image = next(im for im in raw["images"] if im["id"] == int(target["image_id"]))
        assert target["orig_size"].tolist() == [image["height"], image["width"]]
        for (cx, cy, w, h), label in zip(target["boxes"].tolist(), target["class_labels"].tolist()):
            assert 0 < w <= 1 and 0 < h <= 1 and label in (0, 1, 2)
            if data.label_map.category(label) != 7:  # not a triangle
                assert int(pixels[:, int(cy * 48), int(cx * 48)].min()) >= 100


def test_a_missing_image_is_named_or_skipped(tmp_path: Path):
    instances = write_instances(tmp_path / "own", 12)
    images = tmp_path / "own" / "images"
    (images / "00003.png").unlink()
    (images / "00004.png").write_bytes(b"not a png")
    args = [f"data.annotations={instances}", f"data.images={images}", "data.val_fraction=0.25"]
    line = one_line_error(cli("train", "experiment=coco_detect", *args, f"paths.cache_dir={tmp_path / 'c'}",
                              cwd=tmp_path))
    assert "00003.png" in line and "on_bad_image=skip" in line
    data = datamodule([*args, "data.on_bad_image=skip"], tmp_path)
    kept = {data.sets["train"].images[r].id for r in data.sets["train"].rows} | \
        {data.sets["val"].images[r].id for r in data.sets["val"].rows}
    assert kept == set(range(1, 13)) - {3, 4}


@pytest.mark.parametrize("break_it, named", [
    (lambda d: d["annotations"][1].pop("bbox"), "annotations[1] has no 'bbox'"),
    (lambda d: d["images"][0].pop("file_name"), "images[0] has no 'file_name'"),
    (lambda d: d["annotations"][0].update(category_id=99), "annotations[0].category_id = 99"),
    (lambda d: d.pop("categories"), "no 'categories' list"),
])
def test_a_bad_instances_file_is_one_line_naming_file_and_key(tmp_path: Path, break_it, named):
    instances = write_instances(tmp_path / "own", 4)
    data = json.loads(instances.read_text())
    break_it(data)
    instances.write_text(json.dumps(data))
    line = one_line_error(cli("train", "experiment=coco_detect", f"data.annotations={instances}",
                              f"paths.cache_dir={tmp_path / 'c'}", cwd=tmp_path))
    assert str(instances) in line and named in line


def test_a_resumed_detection_run_ends_bitwise_equal_to_the_uninterrupted_one(tmp_path: Path):
    """Resumed mid-epoch from its step-3 checkpoint, the run sees the same images in the same order: the
    weights at step 6 are those of the run that never stopped."""
    args = ["experiment=coco_detect", *TINY, "trainer.max_steps=6", "checkpoint.every_n_steps=3", "test=false",
            f"paths.cache_dir={tmp_path / 'cache'}"]
    ok(cli("train", *args, f"hydra.run.dir={tmp_path / 'whole'}", cwd=tmp_path))
    ok(cli("train", *args, f"ckpt_path={tmp_path / 'whole' / 'checkpoints' / 'step-0000003.ckpt'}",
           f"hydra.run.dir={tmp_path / 'resumed'}", cwd=tmp_path))
    whole, resumed = (torch.load(tmp_path / run / "checkpoints" / "step-0000006.ckpt", map_location="cpu",
                                 weights_only=True)["state_dict"] for run in ("whole", "resumed"))
    assert whole.keys() == resumed.keys()
    assert [k for k in whole if not torch.equal(whole[k], resumed[k])] == []


def test_fine_tuning_a_detection_run_on_another_label_set(detect, tmp_path: Path):
    """init_from=<detection run> on files with two categories of other ids: the backbone and transformer
    come from the run, the class head is new, and the run's detections name the new file's ids."""
    instances = write_instances(tmp_path / "own", 12)
    data = json.loads(instances.read_text())
    data["categories"] = [{"id": 20, "name": "box"}, {"id": 30, "name": "round"}]
    for annotation in data["annotations"]:
        annotation["category_id"] = 20 if annotation["category_id"] == 1 else 30
    instances.write_text(json.dumps(data))
    run = tmp_path / "run"
    ok(cli("train", "experiment=coco_detect", *TINY, f"init_from={detect['run']}", f"data.annotations={instances}",
           f"data.images={tmp_path / 'own' / 'images'}",
           "data.val_fraction=0.25", "trainer.max_steps=2", f"paths.cache_dir={tmp_path / 'cache'}",
           f"hydra.run.dir={run}", cwd=tmp_path))
    config = json.loads((run / "run.json").read_text())
    assert config["parent"]["init_from"] == str(detect["run"])
    assert {d["category_id"] for d in json.loads((run / "detections.json").read_text())} <= {20, 30}
    parent = torch.load(detect["run"] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    child = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    # Conditional DETR scores each class with a sigmoid: one row a class, no no-object row.
    assert child["state_dict"]["model.class_labels_classifier.weight"].shape[0] == 2
    assert parent["state_dict"]["model.class_labels_classifier.weight"].shape[0] == 3
