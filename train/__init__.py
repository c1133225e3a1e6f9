"""Training: models, distillation losses, the training engine, teachers, distillation, comparisons."""
