"""MICS model parts: encoders, pre-training losses, fusion, shift dictionary, evidential heads."""
