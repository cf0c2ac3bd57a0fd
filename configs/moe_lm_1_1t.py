"""moe_lm_1_1t: the 1.1T-parameter MoE LM of Artetxe et al. (2021), "Efficient Large Scale Language
Modeling with Mixture-of-Experts": the GPT-3 6.7B layout (32 layers, hidden 4096, 32 heads, FFN 16384,
2048 tokens) with 512 top-2 experts in every other FFN (capacity factor 1: 2 x tokens / experts slots,
as in GShard). One expert per device on a 512-way `expert` axis, and 4-way model parallelism inside each
expert and the dense layers: meant for a v5p:8x16x16 slice (2048 chips), where
`plmjax compile --config configs/moe_lm_1_1t.py --topology v5p:8x16x16` reports 65 GiB of a chip's 95.
The optimizer follows GPT-3 6.7B: peak learning rate 1.2e-4 with cosine decay, 375M tokens of warmup,
300B tokens in 2M-token batches.
"""

from plmjax.config import gpt


def get_config():
    config = gpt(vocab_size=51200, hidden_size=4096, num_layers=32, num_heads=32, mlp_dim=16384, max_length=2048,
                 ffn_kind="moe", num_experts=512, moe_every=2, router_top_k=2, train_capacity_factor=1.0,
                 eval_capacity_factor=2.0, remat="full")
    config.data.seq_length = 2048
    config.data.batch_size = 1024
    config.optimizer.learning_rate = 1.2e-4
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_steps = 179
    config.optimizer.weight_decay = 0.1
    config.train.num_steps = 143_000
    config.train.log_every = 100
    config.train.checkpoint_every = 2000
    config.mesh.expert = 512
    config.mesh.model = 4
    return config
