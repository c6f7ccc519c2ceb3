"""The file names of a trained model's folder, as `train` and `evaluate` write them; importing it loads nothing.

```
<out_dir>/
  model.keras, preprocessing.json   the Keras model and its fitted preprocessing (`predict.load_trained`)
  config.json                       the ModelConfig and TrainConfig used
  history.json                      Keras history per epoch (the like tower's keys prefixed `like_tower_`)
  metrics.json                      {train,valid,test}_{auc,logloss,...} and run facts
  report/index.html                 ROC, calibration and learning-curve plots, and the metrics
  export/                           the SavedModel with the raw-feature serving signature
```
"""

SPLITS = ("train", "valid", "test")  # the time-ordered splits a model is trained, validated and tested on
MODEL_FILE = "model.keras"
PREPROCESSING_FILE = "preprocessing.json"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
REPORT_DIR = "report"
REPORT_INDEX = "index.html"
EXPORT_DIR = "export"
# The like tower's name inside the served model, and the prefix of its keys in history.json and metrics.json.
LIKE_TOWER = "like_tower"
