"""deberta_tiny: bert_tiny's shape with disentangled attention (c2p + p2c over 32 log buckets, position keys shared
with the content keys) and no absolute positions in the input; masked LM through the enhanced mask decoder (the
last layer run twice more with absolute positions as queries) on the embedded corpus in a few minutes on a CPU.
`--set model.mask_decoder_passes=0` predicts from the last layer instead."""

from plmjax.config import deberta


def get_config():
    config = deberta(vocab_size=4096, hidden_size=128, num_layers=2, num_heads=2, mlp_dim=512, max_length=128,
                     position_buckets=32, position_kind="learned", position_input=False, mask_decoder_passes=2)
    config.objective.kind = "mlm"
    config.data.seq_length = 128
    config.data.batch_size = 32
    config.optimizer.learning_rate = 1e-3
    config.optimizer.warmup_steps = 30
    config.train.num_steps = 300
    config.train.log_every = 10
    config.train.eval_every = 100
    config.train.checkpoint_every = 100
    return config
