"""Names, choices and defaults shared by the library, the CLI, the client, the server, export and
tuning. Pure data, no imports: the CLI builds its parser from these values without loading
TensorFlow, and the library's own defaults come from here, so there is one copy of each.

Each section is owned by the package part named in its heading; add new names to that section.
"""

# ------------------------------------------------------------------ blocks and models
SHORTCUTS = ("auto", "identity", "A", "B", "C", "D")
STRIDE_ON = ("3x3", "1x1")
DENSE_SHORTCUTS = ("auto", "identity", "C")
STEMS = ("imagenet", "cifar", "deep")
POOLINGS = (None, "avg", "max")
COMPATS = (None, "keras.applications")
SUMMARY_MODELS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
# benchmarks/bench.py of a source checkout (run by `keras-resnet bench`)
BENCHMARKS = ("roofline", "resnet50", "precision", "cifar56", "resnet1202", "serving",
              "accuracy", "loop")

# ------------------------------------------------------------------ training recipe
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
SCHEDULES = ("step", "cosine", "constant")
JIT_COMPILE = ("auto", "on", "off")
DEFAULT_MODEL = "cifar-resnet20"
DEFAULT_DATA = "digits"
DEFAULT_EPOCHS = 30
DEFAULT_BATCH_SIZE = 32
DEFAULT_LEARNING_RATE = 0.1
DEFAULT_MOMENTUM = 0.9
DEFAULT_WEIGHT_DECAY = 1e-4
DEFAULT_INITIALIZER = "he_normal"
DEFAULT_RUNS_DIR = "runs"

# ------------------------------------------------------------------ data
DATA_NAMES = ("digits", "cifar10", "synthetic")

# ------------------------------------------------------------------ tuning
TUNERS = ("random", "bayesian", "hyperband", "grid")
FAMILIES = ("cifar", "imagenet")
TUNE_METRICS = ("loss", "accuracy", "top5_accuracy")
DEFAULT_MAX_TRIALS = 8
DEFAULT_TUNE_EPOCHS = 3
DEFAULT_TUNING_DIR = "tuning"
DEFAULT_WORKER_TIMEOUT = 120.0

# ------------------------------------------------------------------ export and serving
DEFAULT_EXPORT_DIR = "saved_models"
IMAGES_SIGNATURE = "serving_default"
BYTES_SIGNATURE = "serving_bytes"
IMAGES_INPUT = "images"
BYTES_INPUT = "image_bytes"
INPUT_DTYPES = ("uint8", "float32")
OUTPUTS = ("probabilities", "scores", "classes", "labels")
DEFAULT_TOP_K = 5
DEFAULT_MAX_BATCH_SIZE = 64
DEFAULT_REST_PORT = 8501
DEFAULT_HOST = "127.0.0.1"
MAX_BODY_BYTES = 32 * 1024 * 1024
