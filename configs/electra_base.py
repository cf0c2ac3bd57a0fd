"""electra_base: a BERT-base discriminator (110M parameters) with a generator a third as wide (hidden 256, 4 heads)
and ELECTRA-Base's recipe: 512-token rows, batch 256, learning rate 2e-4 after 10k warmup steps, 766k steps."""

from plmjax.config import electra


def get_config():
    config = electra(hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072)
    config.objective.replaced_token_detection.generator_hidden_size = 256
    config.objective.replaced_token_detection.generator_num_heads = 4
    config.data.seq_length = 512
    config.data.batch_size = 256
    config.optimizer.learning_rate = 2e-4
    config.optimizer.warmup_steps = 10_000
    config.train.num_steps = 766_000
    config.train.log_every = 100
    config.train.eval_every = 10_000
    config.train.checkpoint_every = 10_000
    return config
