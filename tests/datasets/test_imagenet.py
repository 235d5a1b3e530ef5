"""ImageNetDataset (synset folders, flat val with the ILSVRC2012 ground truth or a ``file label`` list, subsets) and
ModelEvalTransform (a model's own eval preprocessing, equal to timm's on a real photo)."""
import importlib.util
import os

import pytest
import timm
import torch
from conftest import missing_reference
from PIL import Image

import visionzoo  # noqa: F401  (registers our timm models)
from visionzoo.datasets import ImageNetDataset, ModelEvalTransform, imagenet_synsets
from visionzoo.engine.config import load_config
from visionzoo.engine.runner_utils import use_model_eval_transform
from visionzoo.utils.errors import ArgumentError, DatasetError

# ImageNet-1k in the standard sorted-wnid order, known by heart: index 0 is the tench, 1 the goldfish, 967 espresso
TENCH, GOLDFISH, ESPRESSO, LAST = 'n01440764', 'n01443537', 'n07920052', 'n15075141'


def _image(path, value=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new('RGB', (8, 6), (value, 2 * value % 256, 3)).save(path)


@pytest.fixture(scope='module')
def wnids():
    from timm.data import ImageNetInfo
    return list(ImageNetInfo().label_names())


def test_timm_order_and_names():
    wnids, names = imagenet_synsets()
    assert len(wnids) == len(names) == 1000 and wnids == sorted(wnids)
    assert (wnids[0], wnids[1], wnids[967], wnids[999]) == (TENCH, GOLDFISH, ESPRESSO, LAST)
    assert names[0] == 'tench, Tinca tinca' and names[967] == 'espresso'


def test_synset_folders_subset_labels_and_items(tmp_path):
    for wnid, n in ((ESPRESSO, 3), (TENCH, 2), (LAST, 1)):
        for i in range(n):
            _image(str(tmp_path / 'val' / wnid / f'{wnid}_{i}.JPEG'), 10 * i)
    ds = ImageNetDataset(str(tmp_path), split='val', synsets=[ESPRESSO, TENCH, LAST],
                         pipeline=dict(type='TimmTransform', input_size=4, crop_pct=1.0))
    assert [label for _, label in ds.samples] == [967, 967, 967, 0, 0, 999]
    assert len(ds.metainfo['classes']) == 1000 and ds.metainfo['classes'][967] == 'espresso'
    item = ds[3]
    assert item['inputs'].shape == (3, 4, 4) and item['data_samples']['gt_label'] == 0
    assert item['data_samples']['img_path'].endswith(f'val/{TENCH}/{TENCH}_0.JPEG')
    # first N per class; relabel numbers the subset 0..K-1 in the given order
    ds = ImageNetDataset(str(tmp_path), synsets=[LAST, ESPRESSO], max_per_class=2, relabel=True)
    assert [(os.path.basename(p), label) for p, label in ds.samples] == [
        (f'{LAST}_0.JPEG', 0), (f'{ESPRESSO}_0.JPEG', 1), (f'{ESPRESSO}_1.JPEG', 1)]
    assert ds.metainfo == dict(classes=('toilet tissue, toilet paper, bathroom tissue', 'espresso'),
                               synsets=(LAST, ESPRESSO))


def test_all_synset_folders_and_a_missing_one(tmp_path, wnids):
    for wnid in wnids[:-1]:
        (tmp_path / 'train' / wnid).mkdir(parents=True)
    _image(str(tmp_path / 'train' / GOLDFISH / 'a.JPEG'))
    with pytest.raises(DatasetError, match=rf"^{tmp_path}/train: synset folder\(s\) {LAST} missing \(999 of the "
                                           rf"1000 classes present; pass synsets=\[\.\.\.\] for a subset\)$"):
        ImageNetDataset(str(tmp_path), split='train')
    (tmp_path / 'train' / LAST).mkdir()
    ds = ImageNetDataset(str(tmp_path), split='train')
    assert ds.samples == [(str(tmp_path / 'train' / GOLDFISH / 'a.JPEG'), 1)]


def test_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match=rf'^{tmp_path}/val: ImageNet image folder not found'):
        ImageNetDataset(str(tmp_path))
    _image(str(tmp_path / 'val' / 'val' / 'x.JPEG'))  # data_root one level too deep
    with pytest.raises(DatasetError, match=r"^.*/val: folder\(s\) val are not ImageNet-1k synsets"):
        ImageNetDataset(str(tmp_path))
    with pytest.raises(DatasetError, match=r'synsets=\.\.\.\): n0000000: expected ImageNet-1k wnids'):
        ImageNetDataset(str(tmp_path), synsets=['n0000000'])
    (tmp_path / 'train' / TENCH).mkdir(parents=True)
    with pytest.raises(DatasetError, match='no images found'):  # ImageFolderDataset's empty-folder case
        ImageNetDataset(str(tmp_path), split='train', synsets=[TENCH])
    (tmp_path / 'flat').mkdir()
    with pytest.raises(DatasetError, match=r'flat: no synset folders and no label file'):
        ImageNetDataset(str(tmp_path), split='flat')


def _flat_val(root, n):
    for i in range(n):
        _image(os.path.join(root, 'val', f'ILSVRC2012_val_{i + 1:08d}.JPEG'), i)


def test_ground_truth_with_devkit_order(tmp_path, wnids):
    _flat_val(str(tmp_path), 3)
    devkit = tmp_path / 'synsets_in_id_order.txt'  # a permutation: id 1 is the last sorted wnid, id 1000 the first
    devkit.write_text('\n'.join(reversed(wnids)) + '\n')
    gt = tmp_path / 'ILSVRC2012_validation_ground_truth.txt'
    gt.write_text('1\n1000\n33\n')
    ds = ImageNetDataset(str(tmp_path), ann_file=str(gt), devkit=str(devkit))
    assert [(os.path.basename(p), label) for p, label in ds.samples] == [
        ('ILSVRC2012_val_00000001.JPEG', 999), ('ILSVRC2012_val_00000002.JPEG', 0),
        ('ILSVRC2012_val_00000003.JPEG', 967)]
    gt.write_text('1\n2\n')
    with pytest.raises(DatasetError, match=rf'^{gt}: 2 labels for 3 images in {tmp_path}/val \(expected one label '
                                           rf'per image, in sorted file-name order\)$'):
        ImageNetDataset(str(tmp_path), ann_file=str(gt), devkit=str(devkit))
    gt.write_text('1\n1001\n3\n')
    with pytest.raises(DatasetError, match=rf'^{gt}, line 2: label 1001 out of range \(expected 1\.\.1000\)$'):
        ImageNetDataset(str(tmp_path), ann_file=str(gt), devkit=str(devkit))
    with pytest.raises(DatasetError, match=rf'^{gt}: ILSVRC2012 ground-truth ids follow the devkit synset order'):
        ImageNetDataset(str(tmp_path), ann_file=str(gt))
    devkit.write_text('\n'.join(wnids[:999]))
    gt.write_text('1\n2\n3\n')
    with pytest.raises(DatasetError, match=rf'^{devkit}: expected the 1000 distinct ImageNet-1k wnids'):
        ImageNetDataset(str(tmp_path), ann_file=str(gt), devkit=str(devkit))


def test_file_label_list(tmp_path):
    _flat_val(str(tmp_path), 4)
    meta = tmp_path / 'meta' / 'val.txt'
    meta.parent.mkdir()
    meta.write_text('ILSVRC2012_val_00000002.JPEG 967\nILSVRC2012_val_00000001.JPEG 0\n'
                    'ILSVRC2012_val_00000003.JPEG 967\nILSVRC2012_val_00000004.JPEG 999\n')
    ds = ImageNetDataset(str(tmp_path))  # meta/val.txt found by itself, as mmpretrain's layout
    assert [(os.path.basename(p)[-6:], label) for p, label in ds.samples] == [
        ('2.JPEG', 967), ('1.JPEG', 0), ('3.JPEG', 967), ('4.JPEG', 999)]
    ds = ImageNetDataset(str(tmp_path), synsets=[ESPRESSO], max_per_class=1)
    assert [(os.path.basename(p)[-6:], label) for p, label in ds.samples] == [('2.JPEG', 967)]
    # mmpretrain's meta/train.txt: paths inside the synset folders
    _image(str(tmp_path / 'train' / TENCH / 'b.JPEG'))
    _image(str(tmp_path / 'train' / ESPRESSO / 'a.JPEG'))
    (tmp_path / 'meta' / 'train.txt').write_text(f'{ESPRESSO}/a.JPEG 967\n{TENCH}/b.JPEG 0\n')
    ds = ImageNetDataset(str(tmp_path), split='train')
    assert ds.samples == [(str(tmp_path / 'train' / ESPRESSO / 'a.JPEG'), 967),
                          (str(tmp_path / 'train' / TENCH / 'b.JPEG'), 0)]
    meta.write_text('ILSVRC2012_val_00000001.JPEG 0\n')
    with pytest.raises(DatasetError, match=rf'^{meta}: 1 labels for 4 images in {tmp_path}/val \(expected one label '
                                           rf'per image\)$'):
        ImageNetDataset(str(tmp_path))
    meta.write_text('a.JPEG 0\nb.JPEG 1000\nc.JPEG 1\nd.JPEG 1\n')
    with pytest.raises(DatasetError, match=rf'^{meta}, line 1: image a\.JPEG not found in {tmp_path}/val$'):
        ImageNetDataset(str(tmp_path))
    meta.write_text('ILSVRC2012_val_00000001.JPEG 0\nILSVRC2012_val_00000002.JPEG 1000\nc 1\nd 1\n')
    with pytest.raises(DatasetError, match=rf'^{meta}, line 2: label 1000 out of range \(expected 0\.\.999\)$'):
        ImageNetDataset(str(tmp_path))


# ------------------------------------------------------------------------------------------ ModelEvalTransform
FAMILY_MODELS = ['van_b0', 'biformer_tiny', 'slab_deit_tiny', 'vim_tiny', 'mambaout_femto', 'efficientvit_m0',
                 'shvit_s1']


@pytest.fixture(scope='module')
def photo():
    """scikit-image's coffee photo (a PyPI wheel's data file, read without importing scikit-image)."""
    spec = importlib.util.find_spec('skimage')
    path = os.path.join(list(spec.submodule_search_locations)[0], 'data', 'coffee.png') if spec else ''
    if not os.path.isfile(path):
        missing_reference("scikit-image's sample photos", "pip install --no-deps 'scikit-image==0.26.0'")
    return Image.open(path).convert('RGB')


@pytest.mark.parametrize('name', FAMILY_MODELS)
def test_eval_transform_equals_timm_on_a_photo(name, photo):
    from timm.data import create_transform, resolve_data_config
    with torch.device('meta'):  # only the model's pretrained cfg matters: no weights are made
        model = timm.create_model(name, pretrained=False)
    config = resolve_data_config(model=model)
    ours = ModelEvalTransform(name)
    assert ours.data_config == config
    expected = create_transform(**config)(photo)
    got = ours(photo)
    assert got.shape == expected.shape == (3, *config['input_size'][1:])
    assert torch.equal(got, expected)


def test_eval_transform_options_and_typo():
    t = ModelEvalTransform('van_b0', input_size=256, crop_pct=1.0, mean=[0.1, 0.2, 0.3])
    assert t.data_config['input_size'] == (3, 256, 256) and t.data_config['crop_pct'] == 1.0
    assert t.data_config['mean'] == (0.1, 0.2, 0.3) and t.data_config['interpolation'] == 'bicubic'
    with pytest.raises(ArgumentError, match=r"^ModelEvalTransform\(model_name='vim_tinny'\): unknown timm model; "
                                            r"close matches: vim_tiny, "):
        ModelEvalTransform('vim_tinny')
    with pytest.raises(ArgumentError, match=r"^ModelEvalTransform\(model_name='van_b0.in22k'\): Invalid pretrained tag"):
        ModelEvalTransform('van_b0.in22k')
    assert ModelEvalTransform('van_b0.in1k').data_config == ModelEvalTransform('van_b0').data_config
    with pytest.raises(ArgumentError, match=r'^ModelEvalTransform\(model_name=None\): expected a timm model name'):
        ModelEvalTransform()
    with pytest.raises(ArgumentError, match=r'^ModelEvalTransform\(crop=0\.9\): unknown option'):
        ModelEvalTransform('van_b0', crop=0.9)


def test_the_test_tool_gives_the_transform_the_model_name():
    cfg = load_config(os.path.join(os.path.dirname(__file__), '..', '..', 'configs', 'imagenet', 'eval.py'),
                      {'model.backbone.model_name': 'shvit_s1'})
    assert cfg.test_dataloader.dataset.pipeline.model_name is None
    use_model_eval_transform(cfg)
    assert cfg.test_dataloader.dataset.pipeline == dict(type='ModelEvalTransform', model_name='shvit_s1')
    cfg.test_dataloader.dataset.pipeline.model_name = 'van_b0'  # an explicit name stays
    use_model_eval_transform(cfg)
    assert cfg.test_dataloader.dataset.pipeline.model_name == 'van_b0'
