"""Wiring: turns a composed hydra config into objects and runs one task (train, sample, train_tokenizer).

The only package that knows every other one: it builds ``modalities`` datasets/tokenizers/writers,
``core`` models/objectives/trainers and calls ``evals`` for metrics. ``run.py`` is its hydra entry
point; ``experiments`` (the benchmark suite) calls :func:`app.tasks.main` once per cell.

Modules: ``config`` (validation, typed sub-configs, run directory, fingerprint), ``build``
(objects from config), ``evaluation`` (the trainer's eval hook), ``tasks`` (dispatch + the train
task), ``sample`` (task=sample), ``tokenizer`` (task=train_tokenizer), ``repa_encoders``
(REPA's pretrained token encoders built from the evaluators' networks), ``joint`` (``modality=joint``:
one trunk trained on several modalities, docs/joint_training.md).
"""
