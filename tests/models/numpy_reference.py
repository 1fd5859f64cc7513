"""An independent plain-NumPy Transformer, written from the paper, reading a Flax params pytree.

Loops over heads and positions where the paper's formulas do, so that it shares
no code and no vectorisation tricks with `transformer.models`.
"""

import math

import numpy as np

PAD, BOS = 0, 2


def sinusoid(length: int, d_model: int) -> np.ndarray:
  """PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(...): [length, d_model]."""
  table = np.zeros((length, d_model))
  for pos in range(length):
    for i in range(0, d_model, 2):
      table[pos, i] = math.sin(pos / 10000 ** (i / d_model))
      table[pos, i + 1] = math.cos(pos / 10000 ** (i / d_model))
  return table


def layer_norm(x: np.ndarray, p: dict, eps: float = 1e-6) -> np.ndarray:
  """Row-wise (x - mean) / sqrt(var + eps) * scale + bias."""
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * np.asarray(p["scale"]) + np.asarray(p["bias"])


def softmax(x: np.ndarray) -> np.ndarray:
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def attention(xq: np.ndarray, xkv: np.ndarray, allowed: np.ndarray, p: dict) -> np.ndarray:
  """One example: xq [lq, d], xkv [lk, d], allowed bool [lq, lk] -> [lq, d].

  Each head h: softmax(Q_h K_h^T / sqrt(d_k)) V_h; heads concatenated, then W^O.
  """
  wq, wk, wv = (np.asarray(p[n]["kernel"]) for n in ("query", "key", "value"))
  bq, bk, bv = (np.asarray(p[n]["bias"]) for n in ("query", "key", "value"))
  heads, d_k = wq.shape[1], wq.shape[2]
  outputs = []
  for h in range(heads):
    q = xq @ wq[:, h] + bq[h]
    k = xkv @ wk[:, h] + bk[h]
    v = xkv @ wv[:, h] + bv[h]
    scores = q @ k.T / math.sqrt(d_k)
    scores = np.where(allowed, scores, -1e30)
    outputs.append(softmax(scores) @ v)
  concat = np.concatenate(outputs, axis=-1)  # [lq, heads * d_v]
  w_o = np.asarray(p["out"]["kernel"]).reshape(heads * d_k, -1)
  return concat @ w_o + np.asarray(p["out"]["bias"])


def ffn(x: np.ndarray, p: dict) -> np.ndarray:
  """max(0, x W1 + b1) W2 + b2."""
  hidden = np.maximum(0, x @ np.asarray(p["wi"]["kernel"]) + np.asarray(p["wi"]["bias"]))
  return hidden @ np.asarray(p["wo"]["kernel"]) + np.asarray(p["wo"]["bias"])


def add_norm(x: np.ndarray, y: np.ndarray, p: dict) -> np.ndarray:
  """Post-LN residual: LayerNorm(x + Sublayer(x))."""
  return layer_norm(x + y, p)


def embed(tokens: np.ndarray, table: np.ndarray) -> np.ndarray:
  """sqrt(d_model) * E[tokens] + PE: [length] -> [length, d_model]."""
  d_model = table.shape[1]
  return table[tokens] * math.sqrt(d_model) + sinusoid(len(tokens), d_model)


def encoder_decoder(params: dict, inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
  """The post-LN, shared-embedding, sinusoidal Transformer on one unpacked example.

  Args:
    params: the Flax params pytree (unboxed).
    inputs: int [input_len] (PAD = 0 is padding).
    targets: int [target_len].

  Returns:
    logits [target_len, vocab].
  """
  table = np.asarray(params["token_embedding"]["embedding"], np.float64)
  in_valid, tgt_valid = inputs != PAD, targets != PAD
  decoder_inputs = np.where(tgt_valid, np.concatenate([[BOS], targets[:-1]]), PAD)

  x = embed(inputs, table)
  self_allowed = in_valid[:, None] & in_valid[None, :]
  enc = params["encoder"]
  for i in range(sum(k.startswith("layer_") for k in enc)):
    p = enc[f"layer_{i}"]
    x = add_norm(x, attention(x, x, self_allowed, p["self_attention"]), p["self_attention_norm"])
    x = add_norm(x, ffn(x, p["ffn"]), p["ffn_norm"])
  encoded = x

  y = embed(decoder_inputs, table)
  n = len(targets)
  causal = np.tril(np.ones((n, n), bool)) & tgt_valid[:, None] & tgt_valid[None, :]
  cross = tgt_valid[:, None] & in_valid[None, :]
  dec = params["decoder"]
  for i in range(sum(k.startswith("layer_") for k in dec)):
    p = dec[f"layer_{i}"]
    y = add_norm(y, attention(y, y, causal, p["self_attention"]), p["self_attention_norm"])
    y = add_norm(y, attention(y, encoded, cross, p["cross_attention"]),
                 p["cross_attention_norm"])
    y = add_norm(y, ffn(y, p["ffn"]), p["ffn_norm"])
  return y @ table.T
