"""roberta_base: 12 layers, hidden 768 (125M parameters) and the RoBERTa paper's BASE pretraining recipe: MLM on
FULL-SENTENCES rows of 512 tokens, batch 8k, peak learning rate 6e-4 after 24k warmup steps, then linear decay."""

from plmjax.config import roberta


def get_config():
    config = roberta(hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072)
    config.data.seq_length = 512
    config.data.batch_size = 8192
    config.optimizer.learning_rate = 6e-4
    config.optimizer.warmup_steps = 24_000
    config.train.num_steps = 500_000
    config.train.log_every = 100
    config.train.eval_every = 10_000
    config.train.checkpoint_every = 10_000
    return config
