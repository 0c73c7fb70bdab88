"""Evaluation of colorization models: the papers' metrics against baselines, reports,
and studies (the semantic check, ablation tables). Beside the library, not in it:
``colorizer`` stays the model a user installs; this package draws the reports.

- ``python -m evaluation PHOTOS... --model default --out results/``: the evaluation
  tool (``evaluation.evaluate``).
- ``python -m evaluation.semantic``: does colorization help a classifier?
- ``python -m evaluation.ablation``: a table of training runs from one evaluation.
"""
