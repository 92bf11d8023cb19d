"""linq-train: data refinement and LoRA contrastive fine-tuning (issues 6 and 7; not built yet).

It will load every model through ``linq_eval.model.build_model`` (one loader for evaluation, teacher
scoring and training), so pooling, EOS and padding live in one place.
"""
