"""albert_base: E=128, H=768, 12 layers sharing one set of weights (12M parameters) and ALBERT's recipe: n-gram
masking (up to 3 words) plus sentence-order prediction on 512-token rows, LAMB at 1.76e-3, batch 4096, 125k steps."""

from plmjax.config import albert


def get_config():
    config = albert(embedding_size=128, hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072)
    config.data.seq_length = 512
    config.data.batch_size = 4096
    config.optimizer.learning_rate = 1.76e-3
    config.optimizer.warmup_steps = 3_125
    config.train.num_steps = 125_000
    config.train.log_every = 100
    config.train.eval_every = 5_000
    config.train.checkpoint_every = 5_000
    return config
