"""The fusion catalogue: every rule module's RULES, in the order they are tried."""

from mopt.passes.fusion import activation, attention, attention_mask, channel_shuffle, conv_affine, conv_bn, conv_pool, layernorm, mlp, residual, transformer

RULES = [*conv_bn.RULES, *conv_affine.RULES, *residual.RULES, *layernorm.RULES, *attention_mask.RULES, *attention.RULES, *transformer.RULES, *activation.RULES, *conv_pool.RULES, *channel_shuffle.RULES, *mlp.RULES]

__all__ = ["RULES"]
