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
# the keys of keras_resnet.modeling.presets.MODEL_PRESETS, for the CLI's parser (which imports
# no Keras); tests/test_cli.py keeps the two equal
MODEL_NAMES = (*(f"resnet{d}" for d in (18, 34, 50, 101, 152, 200)),
               *(f"preact-resnet{d}" for d in (18, 34, 50, 101, 152, 200)),
               "plain18", "plain34",
               *(f"cifar-resnet{d}" for d in (20, 32, 44, 56, 110, 1202)),
               *(f"cifar-plain{d}" for d in (20, 32, 44, 56, 110)),
               "cifar-preact-resnet164", "cifar-preact-resnet1001")
SUMMARY_MODELS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
# benchmarks/bench.py of a source checkout (run by `keras-resnet bench`)
BENCHMARKS = ("roofline", "resnet50", "precision", "cifar56", "resnet1202", "serving",
              "accuracy", "loop", "bf16", "torchvision")

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
# the values `jit_compile` takes in Python; the CLI's JIT_COMPILE flags map onto them
JIT_COMPILE_VALUES = ("auto", True, False)
JIT_COMPILE_FLAGS = {"auto": "auto", "on": True, "off": False}
DEFAULT_SCHEDULE = "step"
DEFAULT_PRECISION = "float32"
DEFAULT_LABEL_SMOOTHING = 0.0
DEFAULT_SEED = 0
# keras.utils.set_random_seed + TF op determinism: the same seed gives the same run
DEFAULT_DETERMINISTIC = True
# the paper's warm-up (ResNet-110): 0.01 until the training error is below 80%
WARMUP_LEARNING_RATE = 0.01
WARMUP_MAX_ERROR = 0.8
# the recipe `train` uses unless told (keras_resnet.modeling.presets.RECIPES)
DEFAULT_RECIPE = "cifar"
RECIPE_NAMES = ("cifar", "imagenet", "imagenet-step")  # its keys, for the CLI's parser
# fine-tuning a pretrained model (keras_resnet.training.fine_tuning.fine_tune): Adam learning rates
DEFAULT_HEAD_LEARNING_RATE = 1e-3
DEFAULT_FINE_TUNE_LEARNING_RATE = 1e-4

# ------------------------------------------------------------------ distributed
# tf.distribute strategies `train --strategy` takes; "auto" picks from TF_CONFIG and the GPUs
STRATEGIES = ("auto", "one-device", "mirrored", "multi-worker")
DEFAULT_STRATEGY = "auto"
# TF_CONFIG task types a MultiWorkerMirroredStrategy trains with (the chief is a worker too)
TASK_TYPES = ("chief", "worker")
# seconds a collective (all-reduce) may wait for a peer before the job stops with an error
DEFAULT_COLLECTIVE_TIMEOUT = 300.0
# seconds a multi-worker training task waits for the others of TF_CONFIG to start
DEFAULT_TRAIN_WORKER_TIMEOUT = 600.0
# the global batch the recipe's learning rate is given for (the linear scaling rule's base)
BASE_BATCH_SIZE = 128
# what `--strategy mirrored` (and "auto" over several devices) trains with on KERAS_BACKEND=jax
JAX_ENGINE = "keras.distribution.DataParallel"
# in $TMPDIR: what non-chief workers (training, tuning) stage there, as .tmp-<pid>-* entries
# that the next worker on the machine removes when their process is gone
WORKER_TEMP_DIR = "keras-resnet-workers"

# ------------------------------------------------------------------ pretrained weights
# input normalization a converted checkpoint carries: None or torchvision/timm's mean/std
PREPROCESSINGS = (None, "torch")
TORCH_CHECKPOINT_EXTENSIONS = (".safetensors", ".pth", ".pt", ".bin")
WEIGHTS_EXTENSIONS = TORCH_CHECKPOINT_EXTENSIONS + (".keras", ".weights.h5", ".h5")

# ------------------------------------------------------------------ data
DATA_NAMES = ("digits", "cifar10", "synthetic")
COLOR_MODES = ("rgb", "grayscale", "rgba")
CROPS = ("inception", "pad")  # training crop: random-resized (ImageNet) or pad + crop (CIFAR)
DEFAULT_SHUFFLE_BUFFER = 1024  # encoded records held for shuffling a stream
DEFAULT_CACHE_MB = 256  # a folder whose files total less keeps their bytes in memory
DEFAULT_SHARDS = 16
DEFAULT_PREPARE_VALIDATION_SPLIT = 0.1
PREPARE_COLOR_MODES = ("rgb", "grayscale")

# ------------------------------------------------------------------ tuning
TUNERS = ("random", "bayesian", "hyperband", "grid")
FAMILIES = ("cifar", "imagenet")
TUNE_METRICS = ("loss", "accuracy", "top5_accuracy")
DEFAULT_MAX_TRIALS = 8
DEFAULT_TUNE_EPOCHS = 3
DEFAULT_TUNING_DIR = "tuning"
DEFAULT_WORKER_TIMEOUT = 120.0
DEFAULT_TUNER = "random"
DEFAULT_FAMILY = "cifar"
DEFAULT_OBJECTIVE = "val_accuracy"
# batch size the data is first loaded at (a trial's batch_size re-batches it)
DEFAULT_TUNE_BATCH_SIZE = 32
# tf.distribute strategies a trial may use (KerasTuner's distribution_strategy); multi-worker
# tuning is KerasTuner's chief/worker protocol instead
TUNE_STRATEGIES = ("auto", "one-device", "mirrored")
DEFAULT_TUNE_STRATEGY = "auto"
# where trials run: "same" (the tuner's process; its memory grows with every trial), "fresh"
# (a new process per trial), "recycled" (a process runs up to TRIALS_PER_PROCESS trials, then
# a new one takes over: flat memory, TensorFlow's start amortized); "auto": "recycled" where
# a trial process can rebuild the search (data by name or path), else "same"
TRIAL_PROCESSES = ("auto", "same", "fresh", "recycled")
DEFAULT_TRIAL_PROCESS = "auto"
DEFAULT_TRIALS_PER_PROCESS = 5

# ------------------------------------------------------------------ export and serving
DEFAULT_EXPORT_DIR = "saved_models"
IMAGES_SIGNATURE = "serving_default"
BYTES_SIGNATURE = "serving_bytes"
IMAGES_INPUT = "images"
BYTES_INPUT = "image_bytes"
CLASSIFY_SIGNATURE = "classify"         # TF Serving's :classify (tf.Example in, classes/scores out)
CLASSIFY_INPUT = "inputs"               # TF Serving's kClassifyInputs
EXAMPLE_IMAGE_FEATURE = "image/encoded"  # the tf.Example feature holding the JPEG/PNG bytes
INPUT_DTYPES = ("uint8", "float32")
OUTPUTS = ("probabilities", "scores", "classes", "labels")
DEFAULT_TOP_K = 5                       # clipped to the number of classes when not given
DEFAULT_MAX_BATCH_SIZE = 64             # batching_parameters.txt; the local server enforces it
DEFAULT_WARMUP_BATCH_SIZES = (1, 8, 32)  # those above max_batch_size are left out
DEFAULT_MODEL_BASE_PATH = "/models"     # where docker-run.sh mounts the bundle
DEFAULT_REST_PORT = 8501                # TF Serving's --rest_api_port
DEFAULT_GRPC_PORT = 8500                # TF Serving's --port
DEFAULT_HOST = "127.0.0.1"
DEFAULT_POLL_SECONDS = 2.0
DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_MAX_BODY_MB = 32
MAX_BODY_BYTES = DEFAULT_MAX_BODY_MB * 1024 * 1024
MIN_BODY_BYTES = 1024

# ------------------------------------------------------------------ distribute (TFJob manifest)
DEFAULT_TFJOB_IMAGE = "keras-resnet:latest"
DEFAULT_TFJOB_MOUNT = "/shared"
DEFAULT_TFJOB_VOLUME_CLAIM = "keras-resnet"
