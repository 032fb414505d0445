"""Weights from elsewhere: MMSegmentation checkpoints (key maps per module family) and the model zoo."""
