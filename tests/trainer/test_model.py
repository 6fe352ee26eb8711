"""The seed's architecture: sizes, parameter counts, cuDNN eligibility, dtypes, attention."""

import keras
import numpy as np
import pytest

from trainer.model import AttentionPooling, build_model, cudnn_eligible, lstm_layers

SEED_MODEL = {"lstm_units": 128, "lstm_layers": 3, "dropout": 0.5, "dense_units": [256, 128, 64]}


@pytest.mark.parametrize("units,params", [(128, 5_226_819), (64, 2_405_571)])
def test_parameter_count_of_the_seed_architecture(units, params):
    # The seed report claims 2,503,746 for 128 units; the architecture it describes has
    # 5,226,819 (the VGG19 fc2 input makes the first BiLSTM alone 4.3M). 64 units ~ 2.4M.
    model = build_model(20, 4096, {**SEED_MODEL, "lstm_units": units})
    assert model.count_params() == params
    assert model.input_shape == (None, 20, 4096)
    assert model.output_shape == (None, 2)


def test_layer_sequence_matches_the_seed():
    model = build_model(20, 4096, SEED_MODEL)
    # Keras's Dropout with a mask of its own on each replica (trainer/model.py)
    kinds = [type(layer).__name__.replace("ReplicaDropout", "Dropout") for layer in model.layers[1:]]
    assert kinds == (["Bidirectional", "BatchNormalization", "Dropout"] * 3 + ["AttentionPooling"]
                     + ["Dense", "BatchNormalization", "Dropout"] * 2 + ["Dense", "Dropout", "Dense"])
    assert all(isinstance(d, keras.layers.Dropout) for d in model.layers if "Dropout" in type(d).__name__)
    # batch-norm moments over the global batch, not each replica's share
    assert all(b.synchronized for b in model.layers if isinstance(b, keras.layers.BatchNormalization))
    bidis = [layer for layer in model.layers if isinstance(layer, keras.layers.Bidirectional)]
    assert all(b.forward_layer.return_sequences and b.forward_layer.units == 128 for b in bidis)
    assert {d.rate for d in model.layers if isinstance(d, keras.layers.Dropout)} == {0.5}
    assert model.layers[-1].activation.__name__ == "softmax"


def test_lstms_are_cudnn_eligible():
    model = build_model(6, 8, {**SEED_MODEL, "lstm_units": 8})
    lstms = lstm_layers(model)
    assert len(lstms) == 6 and all(cudnn_eligible(l) for l in lstms)
    # the check itself can fail: an LSTM with recurrent dropout or relu would lose cuDNN
    assert not cudnn_eligible(keras.layers.LSTM(8, recurrent_dropout=0.1))
    assert not cudnn_eligible(keras.layers.LSTM(8, activation="relu"))
    assert not cudnn_eligible(keras.layers.LSTM(8, unroll=True))


def test_float16_input_float32_output_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model(6, 8, {**SEED_MODEL, "lstm_units": 8, "dense_units": [8, 8, 8]})
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.inputs[0].dtype == "float16"
    assert model.get_layer("bilstm_1").compute_dtype == "float16"
    assert model.get_layer("bilstm_1").forward_layer.cell.kernel.dtype == "float32"  # variables stay fp32
    out = model(np.random.default_rng(0).normal(size=(4, 6, 8)).astype(np.float16), training=False)
    assert out.dtype == "float32"
    np.testing.assert_allclose(np.asarray(out).sum(axis=1), 1.0, rtol=1e-5)


def test_attention_pooling_is_a_softmax_weighted_mean_over_time():
    layer = AttentionPooling()
    x = np.random.default_rng(1).normal(size=(2, 5, 3)).astype(np.float32)
    got = np.asarray(layer(x))
    w, b = (np.asarray(v) for v in layer.weights)
    scores = x @ w + b  # [2, 5, 1]
    alpha = np.exp(scores - scores.max(axis=1, keepdims=True))
    alpha /= alpha.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(got, (alpha * x).sum(axis=1), rtol=1e-5, atol=1e-6)
    assert layer.count_params() == 3 + 1


def test_model_round_trips_through_a_keras_file(tmp_path):
    model = build_model(6, 8, {**SEED_MODEL, "lstm_units": 8, "dense_units": [8, 8, 8]})
    x = np.random.default_rng(2).normal(size=(3, 6, 8)).astype(np.float16)
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(model(x)), rtol=1e-5)


def test_cudnn_check_reads_the_traced_train_step():
    """The check looks into the graphs fit really ran (nested loop bodies included). On this
    CPU the LSTM runs the generic kernel, so the report must say NO; on a GPU the same code
    finds Keras's CudnnRNNV3 op (not run here: no GPU in this project's CI)."""
    from trainer.callbacks import CudnnReport, describe_cudnn, traced_op_types

    model = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(4), keras.layers.Dense(2)])
    model.compile("adam", "mse")
    lines = []
    report = CudnnReport(lstm_count=1, log=lines.append)
    x = np.random.default_rng(0).normal(size=(8, 5, 3)).astype(np.float32)
    model.fit(x, np.zeros((8, 2), np.float32), epochs=2, verbose=0, callbacks=[report])
    ops = traced_op_types(model.train_function)
    assert ops.get("MatMul", 0) > 0 and ops.get("While", 0) + ops.get("StatelessWhile", 0) > 0
    assert len(lines) == 1 and lines[0].startswith("cuDNN LSTM kernel in the traced train step: NO")
    assert "yes (CudnnRNNV3 x6; 6 LSTM layers)" in describe_cudnn({"CudnnRNNV3": 6, "MatMul": 3}, 6)
