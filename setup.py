"""visionzoo: efficient vision backbones for timm, with config-driven classification and detection."""
from setuptools import find_packages, setup

setup(
    name='visionzoo',
    version='0.1.0',
    description='Efficient vision backbones (ViM, MambaOut, EfficientViT, SHViT, BiFormer, VAN, SLAB) '
                'for timm, with config-driven classification and detection.',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.9',
    packages=find_packages(include=['visionzoo', 'visionzoo.*']),
    install_requires=[
        'torch>=2.4',
        'torchvision>=0.19',
        'timm>=1.0.21',  # timm.layers.calculate_drop_path_rates
        'mmengine==0.10.7',
        'numpy',
        'pycocotools',
        'opencv-python-headless',
        'pillow',
        'tqdm',
    ],
    extras_require={
        'test': ['pytest>=7', 'pytest-xdist', 'faster-coco-eval>=1.6'],
        'coco': ['faster-coco-eval>=1.6'],
    },
    license='Apache-2.0',
)
