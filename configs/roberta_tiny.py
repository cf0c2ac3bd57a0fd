"""roberta_tiny: bert_tiny's shapes with RoBERTa's recipe (MLM alone on FULL-SENTENCES rows, byte-level BPE, positions
offset by pad + 1, AdamW beta2 0.98); trains on the embedded corpus in a couple of minutes on a CPU."""

from plmjax.config import roberta


def get_config():
    config = roberta(vocab_size=4096, hidden_size=128, num_layers=2, num_heads=2, mlp_dim=512, max_length=130)
    config.data.seq_length = 128
    config.data.batch_size = 32
    config.optimizer.learning_rate = 1e-3
    config.optimizer.warmup_steps = 30
    config.train.num_steps = 300
    config.train.log_every = 10
    config.train.eval_every = 100
    config.train.checkpoint_every = 100
    return config
