"""PyTorch training: our small StyleGAN2 on procedural faces (`train-gan`), the regressor E for any
supported generator (`train`), and per-image fine-tuning (`finetune`)."""
