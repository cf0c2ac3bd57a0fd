"""deberta_v3_small: DeBERTa-v3-Small's shape (6 layers, hidden 768, 12 heads: 44M backbone parameters; vocabulary
128100, 256 log buckets over 512 positions) and its pretraining: replaced-token detection with gradient-
disentangled embedding sharing against a generator as wide and half as deep, rtd weight 10 (DeBERTa's rtd_task.py).
The schedule (512-token rows, batch 2048, learning rate 3e-4 after 10k warmup steps, 500_000 steps, AdamW beta2
0.98, eps 1e-6) is a starting point, not a reproduction of the paper's run."""

from plmjax.config import deberta


def get_config():
    config = deberta(hidden_size=768, num_layers=6, num_heads=12, mlp_dim=3072)
    options = config.objective.replaced_token_detection
    options.embedding_sharing = "gdes"
    options.discriminator_weight = 10.0
    options.generator_hidden_size = 768
    options.generator_num_heads = 12
    options.generator_num_layers = 3
    config.data.seq_length = 512
    config.data.batch_size = 2048
    config.optimizer.learning_rate = 3e-4
    config.optimizer.b2 = 0.98
    config.optimizer.eps = 1e-6
    config.optimizer.weight_decay = 0.01
    config.optimizer.warmup_steps = 10_000
    config.train.num_steps = 500_000
    config.train.log_every = 100
    config.train.eval_every = 10_000
    config.train.checkpoint_every = 10_000
    return config
