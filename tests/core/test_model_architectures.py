"""The two architectures in common/model.py (TensorFlow: building a model is the only way to count its weights)."""

import numpy as np
import pytest

from common import model
from common.runconfig import MODEL_ARCHITECTURES


def test_every_configurable_name_has_a_definition():
    assert set(model.ARCHITECTURES) == set(MODEL_ARCHITECTURES)


def test_the_fedavg_papers_cnn_has_its_parameter_count():
    cnn = model.build_model(seed=0, architecture="fedavg-cnn")
    # McMahan et al. 2017: 5x5 convolutions of 32 and 64 channels, each with 2x2 max pooling, 512 dense, softmax.
    assert cnn.count_params() == 1_663_370
    convolutions = [layer for layer in cnn.layers if layer.__class__.__name__ == "Conv2D"]
    assert [(layer.filters, layer.kernel_size) for layer in convolutions] == [(32, (5, 5)), (64, (5, 5))]
    assert cnn.output_shape == (None, 10)


def test_the_default_is_todays_convnet():
    default, named = model.build_model(seed=0), model.build_model(seed=0, architecture="convnet")
    assert default.name == named.name == "mnist_convnet"  # the name Keras records in every model file
    assert default.count_params() == named.count_params() == 197_482
    for left, right in zip(default.get_weights(), named.get_weights()):
        np.testing.assert_array_equal(left, right)


def test_an_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="model must be one of convnet, fedavg-cnn"):
        model.build_model(architecture="resnet")
