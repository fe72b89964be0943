"""Pretrained weights: torchvision / timm ResNet checkpoints, any weights file, fine-tuning.

``from_torch_checkpoint`` builds and loads the model a checkpoint describes;
``load_torch_weights`` and ``load_weights`` load into a model you built; ``fine_tune`` trains
a new head, then optionally the top stages.
"""

from keras_resnet.pretrained.architecture import TorchResNet, infer_architecture
from keras_resnet.pretrained.finetune import FineTuneResult, fine_tune, freeze_backbone
from keras_resnet.pretrained.loading import (PREPROCESSINGS, TORCH_MEAN, TORCH_STD,
                                             caffe_preprocessing, from_torch_checkpoint,
                                             load_weights, torch_preprocessing)
from keras_resnet.pretrained.state_dict import read_state_dict
from keras_resnet.pretrained.torch_weights import (LoadResult, load_state_dict,
                                                   load_torch_weights, torch_prefix)

__all__ = ["FineTuneResult", "LoadResult", "PREPROCESSINGS", "TORCH_MEAN", "TORCH_STD",
           "TorchResNet", "caffe_preprocessing", "fine_tune", "freeze_backbone", "from_torch_checkpoint",
           "infer_architecture", "load_state_dict", "load_torch_weights", "load_weights",
           "read_state_dict", "torch_preprocessing", "torch_prefix"]
