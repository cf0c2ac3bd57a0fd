"""albert_tiny: ALBERT's recipe at bert_tiny's scale (E=64 < H=128, 2 layers sharing one set of weights, n-gram
masking plus sentence-order prediction); trains on the embedded corpus in a couple of minutes on a CPU."""

from plmjax.config import albert


def get_config():
    config = albert(vocab_size=4096, embedding_size=64, hidden_size=128, num_layers=2, num_heads=2, mlp_dim=512,
                    max_length=128)
    config.data.seq_length = 128
    config.data.batch_size = 32
    config.optimizer.learning_rate = 2e-3
    config.optimizer.warmup_steps = 30
    config.train.num_steps = 300
    config.train.log_every = 10
    config.train.eval_every = 100
    config.train.checkpoint_every = 100
    return config
