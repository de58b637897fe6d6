"""What `train.py --resume` loads from a checkpoint folder, read as a resumed run reads it, in a process of its own
(so nothing another test left in TensorFlow, such as a float16 policy, is in it).
Prints JSON: the loaded model's validation loss and the one the interrupted run recorded for that epoch, Adam's
step count and the steps the finished epochs took, and Adam's moments as loaded and as the checkpoint file holds
them (per slot: name, shape, sum).

    python tests/checkpoint_state.py SPLITS_DIR CHECKPOINT_DIR     # HF_HOME: where the run's model is cached
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import numpy as np  # noqa: E402

from imdb_distilbert import compat  # noqa: E402,F401  (before TensorFlow)


def main(splits, folder):
    import tensorflow as tf

    from imdb_distilbert.data import dataset
    from imdb_distilbert.training import learning

    state = json.loads((folder / "state.json").read_text())
    done, settings = state["epochs_done"], state["settings"]
    train_df, test_df = dataset.load_splits(splits / "train.xlsx", splits / "test.xlsx", None, settings["seed"])
    learning.set_seed(settings["seed"])
    train, val, preproc = learning.preprocess(train_df, test_df, settings["maxlen"], "head", "grouped",
                                              settings["seed"])
    learner = learning.build_learner(train, val, preproc, settings["batch_size"], "float32")
    learning.Checkpoints(folder, settings, settings["epochs"]).resume(learner)
    val_loss = learner.model.evaluate(learner.val_data.to_tfdataset(train=False), verbose=0)[0]

    # Adam's slots are restored when they are created: at the first step of training, here by hand (ktrain's
    # legacy Adam: its slots are looked up per weight).
    optimizer, weights = learner.model.optimizer, learner.model.trainable_variables
    optimizer._create_all_weights(weights)
    prefix = str(folder / state["checkpoint"])
    reader = tf.train.load_checkpoint(prefix)
    saved = sorted((key.split("/.OPTIMIZER_SLOT/optimizer/")[1].split("/")[0], list(shape),
                    float(reader.get_tensor(key).astype(np.float64).sum()))
                   for key, shape in tf.train.list_variables(prefix) if "/.OPTIMIZER_SLOT/" in key)
    loaded = sorted((slot, list(w.shape), float(optimizer.get_slot(w, slot).numpy().astype(np.float64).sum()))
                    for w in weights for slot in ("m", "v"))
    print(json.dumps({"val_loss": float(val_loss), "recorded_val_loss": state["history"]["val_loss"][done - 1],
                      "iterations": int(optimizer.iterations.numpy()),
                      "steps": done * -(-len(learner.train_data.x) // settings["batch_size"]),
                      "weights": len(weights), "saved_slots": saved, "loaded_slots": loaded}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
