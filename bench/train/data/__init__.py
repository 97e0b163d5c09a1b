"""Datasets for Dice runs: the built-in phantom (:mod:`.phantom`) and real-data loaders (:mod:`.datasets`)."""
