"""electra_small: the ELECTRA paper's Small model (E=128, H=256, 12 layers, 4 heads; 14M parameters) with a generator
a quarter as wide, and its recipe: 128-token rows, batch 128, learning rate 5e-4 after 10k warmup steps, 1M steps."""

from plmjax.config import electra


def get_config():
    config = electra(embedding_size=128, hidden_size=256, num_layers=12, num_heads=4, mlp_dim=1024, max_length=512)
    config.objective.replaced_token_detection.generator_hidden_size = 64
    config.data.seq_length = 128
    config.data.batch_size = 128
    config.optimizer.learning_rate = 5e-4
    config.optimizer.warmup_steps = 10_000
    config.train.num_steps = 1_000_000
    config.train.log_every = 100
    config.train.eval_every = 10_000
    config.train.checkpoint_every = 10_000
    return config
