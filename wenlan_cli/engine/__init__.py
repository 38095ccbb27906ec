"""The engine every trainer and every inference path stands on.

Run directories and the checkpoint format (`checkpoint.py`, `run_dir.py`), where and how a
model runs (`device.py`: --device, --precision, autocast, threads), processes
(`distributed.py`), metrics (`metrics.py`: metrics.jsonl mirrored into TensorBoard),
progress bars (`progress.py`), run length and warm-ups (`budget.py`), optimizer and
schedule (`optim.py`, `schedule.py`), random state (`rng.py`), resume checks
(`resume.py`), stops (`stops.py`: signals, --max-time, the NaN/inf guard) and the loop
every trainer subclasses (`trainer.py`: `Trainer`, `RunState`). Modules here import only
models, data and the base modules, never an application (`train/`, `search/`, ...) or
the CLI.
"""
