#!/usr/bin/python3
"""Generates the small ONNX models wisp's tests and examples use, with expected outputs.

Every model is written as tests/data/models/NAME.onnx next to NAME.expected.json, which holds
test inputs and the outputs computed here in plain numpy (never by OpenCV or an ONNX runtime),
so the tests compare wisp's backend against an independent reference.

Run from anywhere: /usr/bin/python3 tools/models/make_models.py [OUT_DIR]
Needs Debian's python3-onnx and python3-numpy. Deterministic (fixed seeds): re-running it
rewrites identical files.
"""
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 11
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_DIR = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "data", "models")


def f32(a):
    return np.asarray(a, dtype=np.float32)


def init(name, array):
    return numpy_helper.from_array(f32(array), name)


def value_info(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def save(name, nodes, inputs, outputs, initializers, examples, tolerance, extra=None):
    graph = helper.make_graph(nodes, name, [value_info(n, s) for n, s in inputs],
                              [value_info(n, s) for n, s in outputs], initializers)
    model = helper.make_model(graph, producer_name="wisp-make-models",
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    with open(os.path.join(OUT_DIR, name + ".onnx"), "wb") as f:
        f.write(model.SerializeToString())
    doc = {"model": name + ".onnx", "tolerance": tolerance, "cases": []}
    for feeds, expected in examples:
        doc["cases"].append({
            "inputs": {k: {"shape": list(v.shape), "data": f32(v).ravel().tolist()}
                       for k, v in feeds.items()},
            "outputs": {k: {"shape": list(v.shape), "data": f32(v).ravel().tolist()}
                        for k, v in expected.items()},
        })
    if extra:
        doc.update(extra)
    with open(os.path.join(OUT_DIR, name + ".expected.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def make_mlp(rng):
    """Gemm (transB=1, as PyTorch's Linear exports) + Relu, then MatMul + Add (as Keras does)."""
    w1 = rng.normal(0, 0.5, (8, 4))
    b1 = rng.normal(0, 0.1, 8)
    w2 = rng.normal(0, 0.5, (8, 3))
    b2 = rng.normal(0, 0.1, 3)
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h_pre"], transB=1),
        helper.make_node("Relu", ["h_pre"], ["h"]),
        helper.make_node("MatMul", ["h", "w2"], ["y_pre"]),
        helper.make_node("Add", ["y_pre", "b2"], ["y"]),
    ]
    examples = []
    for _ in range(3):
        x = f32(rng.normal(0, 1, (1, 4)))
        h = np.maximum(x @ w1.T + b1, 0)
        examples.append(({"x": x}, {"y": h @ w2 + b2}))
    save("mlp", nodes, [("x", [1, 4])], [("y", [1, 3])],
         [init("w1", w1), init("b1", b1), init("w2", w2), init("b2", b2)], examples, 1e-4)


def conv1d_ref(x, w, b, pad):
    n, c, length = x.shape
    k_out, _, k = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad)))
    out_len = length + 2 * pad - k + 1
    y = np.zeros((n, k_out, out_len))
    for o in range(k_out):
        for t in range(out_len):
            y[:, o, t] = (xp[:, :, t:t + k] * w[o]).sum(axis=(1, 2)) + b[o]
    return y


def make_conv1d(rng):
    """Conv over (N, C, L) with kernel 3 and padding 1, then Relu: a 1D-CNN's first layer."""
    w = rng.normal(0, 0.5, (4, 2, 3))
    b = rng.normal(0, 0.1, 4)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3], pads=[1, 1]),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    examples = []
    for _ in range(2):
        x = f32(rng.normal(0, 1, (1, 2, 16)))
        examples.append(({"x": x}, {"y": np.maximum(conv1d_ref(x, w, b, 1), 0)}))
    save("conv1d", nodes, [("x", [1, 2, 16])], [("y", [1, 4, 16])], [init("w", w), init("b", b)],
         examples, 1e-4)


def make_cnn1d_medium(rng):
    """A medium 1D-CNN for the benchmark: 3 conv layers (8->32->32->32 channels, length 128),
    then a Gemm head to 4 classes."""
    layers, nodes, inits = [(8, 32), (32, 32), (32, 32)], [], []
    prev, x_ref = "x", None
    weights = []
    for i, (cin, cout) in enumerate(layers):
        w = rng.normal(0, 1.0 / np.sqrt(cin * 3), (cout, cin, 3))
        b = rng.normal(0, 0.1, cout)
        weights.append((w, b))
        inits += [init(f"w{i}", w), init(f"b{i}", b)]
        nodes += [helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=[3],
                                   pads=[1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        prev = f"r{i}"
    wh = rng.normal(0, 0.02, (4, 32 * 128))
    bh = rng.normal(0, 0.1, 4)
    inits += [init("wh", wh), init("bh", bh),
              numpy_helper.from_array(np.array([1, 32 * 128], dtype=np.int64), "flat_shape")]
    nodes += [helper.make_node("Reshape", [prev, "flat_shape"], ["flat"]),
              helper.make_node("Gemm", ["flat", "wh", "bh"], ["y"], transB=1)]
    x = f32(rng.normal(0, 1, (1, 8, 128)))
    h = x
    for w, b in weights:
        h = np.maximum(conv1d_ref(h, w, b, 1), 0)
    y = h.reshape(1, -1) @ wh.T + bh
    save("cnn1d_medium", nodes, [("x", [1, 8, 128])], [("y", [1, 4])], inits,
         [({"x": x}, {"y": y})], 1e-3)


def make_lstm(rng):
    """One LSTM layer (gate order i, o, f, c as ONNX defines it), hidden 4, 5 steps of 3 inputs."""
    hidden, steps, features = 4, 5, 3
    w = rng.normal(0, 0.5, (1, 4 * hidden, features))
    r = rng.normal(0, 0.5, (1, 4 * hidden, hidden))
    b = rng.normal(0, 0.1, (1, 8 * hidden))
    h0 = np.zeros((1, 1, hidden))
    c0 = np.zeros((1, 1, hidden))
    nodes = [helper.make_node("LSTM", ["x", "w", "r", "b", "", "h0", "c0"], ["y", "y_h", "y_c"],
                              hidden_size=hidden)]
    examples = []
    for _ in range(2):
        x = f32(rng.normal(0, 1, (steps, 1, features)))
        h, c = h0[0].copy(), c0[0].copy()
        wb, rb = b[0, :4 * hidden], b[0, 4 * hidden:]
        ys = []
        for t in range(steps):
            gates = x[t] @ w[0].T + h @ r[0].T + wb + rb
            i, o, f, g = np.split(gates, 4, axis=-1)
            c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
            h = sigmoid(o) * np.tanh(c)
            ys.append(h)
        y = np.stack(ys)[:, None, :, :]  # [T, num_directions, N, hidden]
        examples.append(({"x": x}, {"y": y}))
    save("lstm", nodes, [("x", [steps, 1, features])], [("y", [steps, 1, 1, hidden])],
         [init("w", w), init("r", r), init("b", b), init("h0", h0), init("c0", c0)], examples,
         1e-4)


def make_gru(rng):
    """One GRU layer (gate order z, r, h; linear_before_reset=1 as PyTorch exports it)."""
    hidden, steps, features = 4, 5, 3
    w = rng.normal(0, 0.5, (1, 3 * hidden, features))
    r = rng.normal(0, 0.5, (1, 3 * hidden, hidden))
    b = rng.normal(0, 0.1, (1, 6 * hidden))
    h0 = np.zeros((1, 1, hidden))
    nodes = [helper.make_node("GRU", ["x", "w", "r", "b", "", "h0"], ["y", "y_h"],
                              hidden_size=hidden, linear_before_reset=1)]
    examples = []
    for _ in range(2):
        x = f32(rng.normal(0, 1, (steps, 1, features)))
        h = h0[0].copy()
        wz, wr, wh = np.split(w[0], 3)
        rz, rr, rh = np.split(r[0], 3)
        wbz, wbr, wbh, rbz, rbr, rbh = np.split(b[0], 6)
        ys = []
        for t in range(steps):
            z = sigmoid(x[t] @ wz.T + h @ rz.T + wbz + rbz)
            rt = sigmoid(x[t] @ wr.T + h @ rr.T + wbr + rbr)
            cand = np.tanh(x[t] @ wh.T + rt * (h @ rh.T + rbh) + wbh)
            h = (1 - z) * cand + z * h
            ys.append(h)
        examples.append(({"x": x}, {"y": np.stack(ys)[:, None, :, :]}))
    save("gru", nodes, [("x", [steps, 1, features])], [("y", [steps, 1, 1, hidden])],
         [init("w", w), init("r", r), init("b", b), init("h0", h0)], examples, 1e-4)


def pump_spectrum(rng, n, anomalous=False):
    """Synthetic vibration band energies (16 bands) of a healthy pump: a 1x running-speed peak,
    its harmonics and noise. An anomaly (bearing wear) adds energy in the high bands."""
    base = np.array([0.2, 1.0, 0.3, 0.5, 0.15, 0.3, 0.1, 0.12, 0.08, 0.06, 0.05, 0.05, 0.04, 0.04,
                     0.03, 0.03])
    load = rng.uniform(0.7, 1.3, (n, 1))
    x = base * load + rng.normal(0, 0.01, (n, 16))
    if anomalous:
        x[:, 10:] += rng.uniform(0.3, 0.6, (n, 6))
    return x


def make_pump_autoencoder(rng):
    """A linear autoencoder (16 -> 3 -> 16) fitted to healthy spectra by PCA: reconstruction
    error is small for healthy pumps and large for worn bearings."""
    train = pump_spectrum(rng, 500)
    mean = train.mean(axis=0)
    _, _, vt = np.linalg.svd(train - mean, full_matrices=False)
    enc = vt[:3]  # [3, 16]
    nodes = [
        helper.make_node("Gemm", ["x", "enc_w", "enc_b"], ["code"], transB=1),
        # transB=1 here too: OpenCV 4.6 refuses a Gemm with a bias and untransposed constant
        # weights (gemm_plain below; docs/inference.md).
        helper.make_node("Gemm", ["code", "dec_w", "dec_b"], ["reconstruction"], transB=1),
    ]
    examples, errors = [], []
    for anomalous in (False, True):
        x = f32(pump_spectrum(rng, 1, anomalous))
        recon = ((x - mean) @ enc.T) @ enc + mean
        examples.append(({"x": x}, {"reconstruction": recon}))
        errors.append(float(np.mean((recon - x) ** 2)))
    healthy_errors = np.mean(
        (((train - mean) @ enc.T) @ enc + mean - train) ** 2, axis=1)
    save("pump_autoencoder", nodes, [("x", [1, 16])], [("reconstruction", [1, 16])],
         [init("enc_w", enc), init("enc_b", -mean @ enc.T), init("dec_w", enc.T),
          init("dec_b", mean)], examples, 1e-4,
         {"mse": errors, "healthy_mse_p99": float(np.percentile(healthy_errors, 99))})


def feeder_windows(rng, label, n):
    """8 RMS voltage samples (per unit) of a feeder: 0 normal (~1.0), 1 sag (dip to 0.5-0.85
    in the middle), 2 swell (rise to 1.1-1.3)."""
    x = 1.0 + rng.normal(0, 0.01, (n, 8))
    depth = rng.uniform(0.15, 0.5, (n, 1))
    if label == 1:
        x[:, 2:6] -= depth
    elif label == 2:
        x[:, 2:6] += depth * 0.6
    return x


def make_feeder_classifier(rng):
    """Softmax regression (8 -> 3 classes: normal, sag, swell) on features (v - 1) * 10, trained
    here by gradient descent; the scaling is the function's pre-processing, not the model's."""
    xs, ys = [], []
    for label in range(3):
        xs.append(feeder_windows(rng, label, 300))
        ys += [label] * 300
    x = (np.concatenate(xs) - 1.0) * 10.0
    y = np.eye(3)[ys]
    w = np.zeros((3, 8))
    b = np.zeros(3)
    for _ in range(500):
        p = softmax(x @ w.T + b)
        grad = p - y
        w -= 0.1 * grad.T @ x / len(x)
        b -= 0.1 * grad.mean(axis=0)
    nodes = [
        helper.make_node("Gemm", ["x", "w", "b"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    examples = []
    for label in range(3):
        raw = feeder_windows(rng, label, 1)
        feats = f32((raw - 1.0) * 10.0)
        examples.append(({"x": feats}, {"probabilities": softmax(feats @ w.T + b)}))
    save("feeder_classifier", nodes, [("x", [1, 8])], [("probabilities", [1, 3])],
         [init("w", w), init("b", b)], examples, 1e-4,
         {"labels": ["normal", "sag", "swell"],
          "train_accuracy": float((softmax(x @ w.T + b).argmax(1) == np.array(ys)).mean())})


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    # One generator per model, so changing one model never changes the others' weights.
    make_mlp(np.random.default_rng(1))
    make_conv1d(np.random.default_rng(2))
    make_lstm(np.random.default_rng(3))
    make_gru(np.random.default_rng(4))
    make_pump_autoencoder(np.random.default_rng(5))
    make_feeder_classifier(np.random.default_rng(6))
    make_cnn1d_medium(np.random.default_rng(7))
    # examples/feeder-classifier deploys its model with the function.
    example = os.path.join(ROOT, "examples", "feeder-classifier", "feeder_classifier.onnx")
    if os.path.isdir(os.path.dirname(example)):
        with open(os.path.join(OUT_DIR, "feeder_classifier.onnx"), "rb") as src:
            with open(example, "wb") as dst:
                dst.write(src.read())
    # Gemm with untransposed constant weights and a bias (transB=0, as some exporters write it):
    # valid ONNX that OpenCV 4.6's importer refuses.
    rng = np.random.default_rng(8)
    w, b = rng.normal(0, 0.5, (4, 3)), rng.normal(0, 0.1, 3)
    x = f32(rng.normal(0, 1, (1, 4)))
    save("gemm_plain", [helper.make_node("Gemm", ["x", "w", "b"], ["y"])], [("x", [1, 4])],
         [("y", [1, 3])], [init("w", w), init("b", b)], [({"x": x}, {"y": x @ w + b})], 1e-4)
    # A valid model using an operator OpenCV 4.6 lacks, for refusal tests.
    graph = helper.make_graph([helper.make_node("Einsum", ["a", "b"], ["y"], equation="ij,jk->ik")],
                              "einsum", [value_info("a", [2, 2]), value_info("b", [2, 2])],
                              [value_info("y", [2, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 7
    with open(os.path.join(OUT_DIR, "unsupported_einsum.onnx"), "wb") as f:
        f.write(model.SerializeToString())


if __name__ == "__main__":
    main()
