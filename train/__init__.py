"""Training for the colorizer: ``python -m train`` (see ``train.loop``), ``python -m train.prior``.

Modules: ``config`` (the typed run configuration), ``data`` (rows -> uint8 batches on CPU
workers), ``prior`` (the empirical ab prior), ``checkpoint`` (exact resumption without
pickle) and ``loop`` (the training loop, top to bottom).
"""
