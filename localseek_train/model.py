"""localseek-nano: Hugging Face's DeepseekV3ForCausalLM plus one multi-token-prediction (MTP) module.

transformers implements the DeepSeek-V3 trunk (MLA with q- and kv-LoRA, MoE with routed and shared experts,
sigmoid router with `e_score_correction_bias`, dense leading layers) but not MTP. `MTPModule` follows the
DeepSeek-V3 report (section 2.2) and the layout of the released checkpoint, layer index = num_hidden_layers:

    h'_i = eh_proj( [enorm(Emb(t_{i+1})) ; hnorm(h_i)] )       (embedding first, as vLLM and llama.cpp read it)
    h''_i = DecoderLayer(h'_i)                                  (a full MLA + MoE layer)
    logits_i = shared_head.head( shared_head.norm(h''_i) )      → predicts t_{i+2}

where h_i is the trunk's final hidden state after `model.norm` (what llama.cpp feeds its MTP graph). The
embedding and output head are shared with the trunk, as in the report; the checkpoint stores copies under
`model.layers.<n>.embed_tokens` and `model.layers.<n>.shared_head.head`, like DeepSeek's own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM
from transformers.models.deepseek_v3.modeling_deepseek_v3 import (
    DeepseekV3DecoderLayer,
    DeepseekV3RMSNorm,
    DeepseekV3TopkRouter,
)

# config.json of localseek-nano, in the key spelling of deepseek-ai/DeepSeek-V3's config.json.
NANO_CONFIG: dict = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 2,
    "first_k_dense_replace": 1,
    "hidden_act": "silu",
    "hidden_size": 128,
    "initializer_range": 0.02,
    "intermediate_size": 384,
    "kv_lora_rank": 32,
    "max_position_embeddings": 1024,
    "moe_intermediate_size": 128,
    "moe_layer_freq": 1,
    "n_group": 4,
    "n_routed_experts": 8,
    "n_shared_experts": 1,
    "norm_topk_prob": True,
    "num_attention_heads": 4,
    "num_experts_per_tok": 2,
    "num_hidden_layers": 4,
    "num_key_value_heads": 4,
    "num_nextn_predict_layers": 1,
    "q_lora_rank": 64,
    "qk_nope_head_dim": 32,
    "qk_rope_head_dim": 16,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 10000.0,
    "routed_scaling_factor": 2.5,
    "scoring_func": "sigmoid",
    "tie_word_embeddings": False,
    "topk_group": 2,
    "topk_method": "noaux_tc",
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "v_head_dim": 32,
    "vocab_size": None,  # set from the tokenizer
}


def hf_config(cfg: dict) -> DeepseekV3Config:
    """A transformers config from a V3-style config dict (quantization_config and MTP keys ignored)."""
    keys = {k: v for k, v in cfg.items() if k not in ("quantization_config", "architectures", "model_type")}
    config = DeepseekV3Config(**keys)
    config._attn_implementation = "sdpa"
    return config


class MTPModule(nn.Module):
    """One DeepSeek-V3 MTP module (depth 1). Its decoder layer has layer_idx = num_hidden_layers (MoE)."""

    def __init__(self, config: DeepseekV3Config) -> None:
        super().__init__()
        h = config.hidden_size
        self.enorm = DeepseekV3RMSNorm(h, eps=config.rms_norm_eps)
        self.hnorm = DeepseekV3RMSNorm(h, eps=config.rms_norm_eps)
        self.eh_proj = nn.Linear(2 * h, h, bias=False)
        self.layer = DeepseekV3DecoderLayer(config, layer_idx=config.num_hidden_layers)
        self.shared_head_norm = DeepseekV3RMSNorm(h, eps=config.rms_norm_eps)

    def forward(self, h_main: torch.Tensor, next_embeds: torch.Tensor, position_embeddings) -> torch.Tensor:
        x = self.eh_proj(torch.cat([self.enorm(next_embeds), self.hnorm(h_main)], dim=-1))
        x = self.layer(x, attention_mask=None, position_embeddings=position_embeddings)
        return self.shared_head_norm(x)


class NanoModel(nn.Module):
    """The trunk (a genuine `DeepseekV3ForCausalLM`) and its MTP module."""

    def __init__(self, cfg: dict) -> None:
        super().__init__()
        self.cfg = dict(cfg)
        self.config = hf_config(cfg)
        self.lm = DeepseekV3ForCausalLM(self.config)
        self.mtp = MTPModule(self.config)
        self.mtp.apply(self.lm._init_weights)

    def routers(self) -> list[DeepseekV3TopkRouter]:
        return [m for m in self.modules() if isinstance(m, DeepseekV3TopkRouter)]

    def losses(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Main next-token loss and MTP (token after next) loss, averaged over target tokens with mask=1.

        ids: [B, T] right-padded; mask[b, t] = 1 where token t is a target to learn.
        """
        out = self.lm.model(input_ids=ids, use_cache=False)
        h = out.last_hidden_state  # after model.norm
        logits = self.lm.lm_head(h[:, :-1])
        m1 = mask[:, 1:].float()
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none")
        main = (ce * m1.reshape(-1)).sum() / m1.sum()

        # MTP: (h_i, t_{i+1}) -> t_{i+2}, positions 0..T-2 (relative positions are what RoPE sees).
        emb = self.lm.model.embed_tokens(ids[:, 1:-1])
        pos = torch.arange(emb.shape[1], device=ids.device).unsqueeze(0)
        pe = self.lm.model.rotary_emb(emb, pos)
        hm = self.mtp(h[:, :-2], emb, pe)
        mlogits = self.lm.lm_head(hm)
        m2 = mask[:, 2:].float()
        ce2 = F.cross_entropy(mlogits.reshape(-1, mlogits.shape[-1]), ids[:, 2:].reshape(-1), reduction="none")
        mtp = (ce2 * m2.reshape(-1)).sum() / m2.sum()
        return main, mtp

    @torch.no_grad()
    def mtp_logits(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(trunk logits [B,T,V], MTP logits [B,T-1,V]) for a full sequence; MTP row i predicts token i+2."""
        h = self.lm.model(input_ids=ids, use_cache=False).last_hidden_state
        emb = self.lm.model.embed_tokens(ids[:, 1:])
        pos = torch.arange(emb.shape[1], device=ids.device).unsqueeze(0)
        hm = self.mtp(h[:, :-1], emb, self.lm.model.rotary_emb(emb, pos))
        return self.lm.lm_head(h), self.lm.lm_head(hm)


class RouterBalancer:
    """DeepSeek-V3's auxiliary-loss-free load balancing: after each step, nudge each expert's
    `e_score_correction_bias` by ±gamma towards equal load (report section 2.1.2)."""

    def __init__(self, model: NanoModel, gamma: float) -> None:
        self.gamma = gamma
        self.routers = model.routers()
        self.counts = {id(r): torch.zeros(r.num_experts) for r in self.routers}
        for r in self.routers:
            r.register_forward_hook(self._hook)

    def _hook(self, module: DeepseekV3TopkRouter, args, output) -> None:
        if module.training:
            idx = output[2]
            self.counts[id(module)] += torch.bincount(idx.reshape(-1), minlength=module.num_experts).float()

    @torch.no_grad()
    def step(self) -> float:
        """Apply the update; return the worst max/mean load ratio seen since the last step."""
        worst = 0.0
        for r in self.routers:
            c = self.counts[id(r)]
            if c.sum() == 0:
                continue
            r.e_score_correction_bias += self.gamma * torch.sign(c.mean() - c)
            worst = max(worst, float(c.max() / c.mean()))
            c.zero_()
        return worst


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
