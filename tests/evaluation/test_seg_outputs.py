"""Segmentation outputs of tools/test.py: label PNGs (--out DIR, as mmseg's format_only) and drawn masks."""
import numpy as np
import pytest
import torch
from PIL import Image

from visionzoo.evaluation.dump import DumpSegMaps
from visionzoo.utils.errors import ConfigError
from visionzoo.visualization import draw_prediction, draw_segmentation


def _sample(name, label, **kw):
    return dict(img_path=f'/data/images/{name}.jpg', pred_sem_seg=torch.as_tensor(label), **kw)


def test_label_pngs_are_written_raw_with_reduce_zero_label_undone(tmp_path):
    out = tmp_path / 'pred'
    dump = DumpSegMaps(str(out))
    a = np.array([[0, 1], [149, 2]])
    dump.process({}, [_sample('a', a, reduce_zero_label=True), _sample('b', a)])
    dump.process({}, [_sample('c', np.array([[300, 0]]))])
    assert dump.compute_metrics(dump.results) == {}
    np.testing.assert_array_equal(np.array(Image.open(out / 'a.png')), a + 1)  # ADE20K's own 1..150 convention
    np.testing.assert_array_equal(np.array(Image.open(out / 'b.png')), a)
    assert np.array(Image.open(out / 'a.png')).dtype == np.uint8
    c = np.array(Image.open(out / 'c.png'))
    assert c.tolist() == [[300, 0]]  # more than 255 classes: 16-bit
    with pytest.warns(UserWarning, match='a repeats; written as a_1.png'):
        dump.process({}, [_sample('a', a)])
    assert (out / 'a_1.png').exists()


def test_out_dir_must_be_new_or_empty(tmp_path):
    (tmp_path / 'full').mkdir()
    (tmp_path / 'full' / 'x.png').write_bytes(b'')
    with pytest.raises(ConfigError, match='not an empty folder'):
        DumpSegMaps(str(tmp_path / 'full'))
    with pytest.raises(ConfigError, match='label PNGs into a folder'):
        DumpSegMaps(str(tmp_path / 'preds.json'))
    (tmp_path / 'empty').mkdir()
    DumpSegMaps(str(tmp_path / 'empty'))


def test_draw_segmentation_colours_classes_with_the_palette_and_lists_them():
    img = np.full((40, 60, 3), 100, dtype=np.uint8)
    label = np.zeros((40, 60), dtype=np.int64)
    label[:, 30:] = 2
    label[:5, :5] = 255  # ignored pixels stay as they are
    palette = [[255, 0, 0], [0, 255, 0], [0, 0, 255]]  # RGB
    out = draw_segmentation(img, label, classes=('bg', 'x', 'sky'), palette=palette, alpha=0.5, min_side=0)
    assert out.shape[0] == 40 and out.shape[1] > 60  # a legend strip on the right
    np.testing.assert_array_equal(out[20, 10], [50, 50, 178])  # BGR: red at alpha 0.5 over grey 100
    np.testing.assert_array_equal(out[20, 45], [178, 50, 50])  # blue
    np.testing.assert_array_equal(out[2, 2], [100, 100, 100])
    legend = out[:, 60:]
    # two classes present: two colour swatches, the larger class (bg: 1175 px > sky: 1200 px?) in pixel-count order
    first, second = legend[8, 10], legend[26, 10]
    assert {tuple(first), tuple(second)} == {(0, 0, 255), (255, 0, 0)}
    assert tuple(first) == ((255, 0, 0) if (label == 2).sum() > (label == 0).sum() else (0, 0, 255))
    assert not (legend[44:, :] != 255).any() if legend.shape[0] > 44 else True
    np.testing.assert_array_equal(draw_prediction(img, dict(pred_sem_seg=torch.as_tensor(label)), ('bg', 'x', 'sky'),
                                                  palette=palette),
                                  draw_segmentation(img, label, ('bg', 'x', 'sky'), palette))
    with pytest.raises(ValueError, match=r'label map \(4, 4\) and image \(40, 60\) differ'):
        draw_segmentation(img, np.zeros((4, 4)))
