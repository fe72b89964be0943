"""Train a CIFAR ResNet-20 on the embedded digits with the paper's recipe, from Python.

    .venv/bin/python examples/train_digits.py              # 30 epochs, >= 97% in ~2 minutes
    .venv/bin/python examples/train_digits.py --epochs 2   # a quick look
"""

import argparse

from keras_resnet import load_dataset, train

parser = argparse.ArgumentParser(description="Train CIFAR ResNet-20 on digits.")
parser.add_argument("--epochs", type=int, default=30)
parser.add_argument("--out", default="runs", help="parent of the run directory")
args = parser.parse_args()

data = load_dataset("digits", batch_size=32, seed=0)  # tf.data: augmented train, val, test
print(data.describe())
result = train("cifar-resnet20", data, epochs=args.epochs, learning_rate=0.1, schedule="step",
               out_dir=args.out, export_dir=None, name="example-digits", verbose=2)
print(f"test accuracy {result.metrics['test_accuracy']:.2%} in {result.run_dir}")

images, labels = next(iter(data.test))  # raw 0..255 pixels: the model normalizes itself
predicted = result.model.predict(images[:8], verbose=0).argmax(axis=-1)
print("predicted", predicted.tolist(), "true", labels[:8].numpy().tolist())
