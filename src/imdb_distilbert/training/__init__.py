"""Training: the recipe that train.py and the notebook run step by step (recipe.py), the ktrain learner and
its batches, precision and checkpoints (learning.py), and the evaluation report with its plots."""
