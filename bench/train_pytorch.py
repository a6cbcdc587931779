"""Training throughput of a Llama-shaped model in PyTorch, the side-by-side reference for `llmshrink train`.

Same work per step as LlmShrink's pretraining loop: random-initialized Llama (RMSNorm, rotate-half RoPE, grouped-query
attention, SwiGLU, untied lm_head) read from a Hugging Face config.json; next-token cross-entropy over batch x seq-len
tokens; backward; global gradient-norm clipping at 1.0; AdamW (weight decay 0.1). Random token ids stand in for text:
the arithmetic does not depend on the values.

Run with Debian's python3-torch (1.13) and the best BLAS installed (Debian selects the reference BLAS unless OpenBLAS is
the active alternative; LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-pthread picks OpenBLAS for one process), e.g.
    LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-pthread \\
    /usr/bin/python3 bench/train_pytorch.py ../shared/models/tinylit-8m/config.json --batch 16 --seq-len 256 --steps 6 --threads 2
Prints one line per step and the mean tokens/s of the steps after the first (the first includes allocator warm-up).
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F


class RmsNorm(torch.nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(seq_len, head_dim, theta):
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class Block(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        d, f = c["hidden_size"], c["intermediate_size"]
        self.heads, self.kv_heads = c["num_attention_heads"], c["num_key_value_heads"]
        self.head_dim = c.get("head_dim", d // self.heads)
        self.attn_norm = RmsNorm(d, c["rms_norm_eps"])
        self.q = torch.nn.Linear(d, self.heads * self.head_dim, bias=False)
        self.k = torch.nn.Linear(d, self.kv_heads * self.head_dim, bias=False)
        self.v = torch.nn.Linear(d, self.kv_heads * self.head_dim, bias=False)
        self.o = torch.nn.Linear(self.heads * self.head_dim, d, bias=False)
        self.mlp_norm = RmsNorm(d, c["rms_norm_eps"])
        self.gate = torch.nn.Linear(d, f, bias=False)
        self.up = torch.nn.Linear(d, f, bias=False)
        self.down = torch.nn.Linear(f, d, bias=False)

    def forward(self, x, cos, sin, mask):
        b, t, _ = x.shape
        h = self.attn_norm(x)
        q = self.q(h).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k(h).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v(h).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        group = self.heads // self.kv_heads
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim) + mask
        attended = torch.softmax(scores, dim=-1) @ v
        x = x + self.o(attended.transpose(1, 2).reshape(b, t, -1))
        h = self.mlp_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Llama(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed = torch.nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.blocks = torch.nn.ModuleList(Block(c) for _ in range(c["num_hidden_layers"]))
        self.norm = RmsNorm(c["hidden_size"], c["rms_norm_eps"])
        self.lm_head = torch.nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)
        self.head_dim = self.blocks[0].head_dim
        self.theta = c.get("rope_theta", 10000.0)

    def forward(self, tokens):
        t = tokens.shape[1]
        cos, sin = rope_tables(t, self.head_dim, self.theta)
        mask = torch.full((t, t), float("-inf")).triu(1)
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, cos, sin, mask)
        return self.lm_head(self.norm(x))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--layers", type=int, help="keep only this many blocks (e.g. 1: one block of a large shape)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    c = json.load(open(a.config))
    if a.layers:
        c["num_hidden_layers"] = a.layers
    model = Llama(c)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    tokens_per_step = a.batch * a.seq_len
    rates = []
    for step in range(a.steps):
        batch = torch.randint(0, c["vocab_size"], (a.batch, a.seq_len + 1))
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, c["vocab_size"]), batch[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        seconds = time.perf_counter() - start
        rates.append(tokens_per_step / seconds)
        print(f"step {step + 1}/{a.steps}  loss {loss.item():.4f}  {seconds:.3f} s  {rates[-1]:.0f} tokens/s", flush=True)
    steady = rates[1:] or rates
    print(f"torch {torch.__version__}, {a.threads} threads: {sum(steady) / len(steady):.0f} training tokens/s "
          f"(mean of steps 2..{a.steps}, batch {a.batch} x {a.seq_len})")


if __name__ == "__main__":
    main()
