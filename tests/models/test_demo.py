"""The embedded demo: the document's model on Keras-trained weights shipped in the package."""
import numpy as np

from rnnengine import demo


def test_demo_model_reproduces_keras_predictions(backend):
    weights, data = demo.load_demo_data()
    model = demo.build_demo_model()
    model.set_weights(weights)
    probs = model.predict(data["x_test"])
    np.testing.assert_allclose(probs, data["keras_probs"], atol=1e-5, rtol=1e-5)
    accuracy = (probs.argmax(1) == data["y_test"]).mean()
    assert accuracy == float(data["keras_accuracy"]) or abs(accuracy - float(data["keras_accuracy"])) < 1e-6
    assert accuracy > 0.9  # trained weights, not random ones


def test_demo_main_prints_accuracy_and_latency():
    lines = []
    demo.main(print_fn=lines.append)
    text = "\n".join(lines)
    assert "[numba] test accuracy" in text and "latency" in text
