"""toyworld: procedural scenes with a right answer (grammar), their analytic renderer (render), ground-truth metrics."""
