"""Task transforms: pure functions from token ids of one example to model features.

Every function takes and returns numpy arrays (int32 ids, float32 weights) and
keeps no state; randomness comes in as an explicit `np.random.Generator`.
Sequences are unpadded here; `pad_example` (eval) or grain packing (train)
brings them to fixed lengths.

- lm:              document -> chunks of `targets` (EOS after the document, no BOS:
                   the model shifts right itself).
- seq2seq:         (inputs, targets) -> both with EOS; over-long inputs keep their start
                   (`data.truncate_inputs`, default on; off: skipped).
- prefix_lm:       (prompt, target) -> one `targets` sequence prompt + target + EOS,
                   `targets_weights` 1.0 on target and EOS, 0.0 on the prompt; an over-long
                   prompt keeps its start (`data.truncate_inputs`), the target is never cut.
- span_corruption: T5 §3.1.4: noise density 0.15, mean span length 3, spans
                   replaced by sentinels <extra_id_0>, <extra_id_1>, ... in order;
                   targets = each sentinel followed by the span it replaced.
- preference:      (prompt, K responses, best first) -> `response_k` = prompt + response
                   + EOS, `response_k_weights` 1.0 on the response and EOS (decoder-only);
                   the prompt is cut to fit the longest response, responses never are: a
                   rejected response that cannot fit is left out (its pair dropped), a
                   record left without a pair is dropped.
- preference_seq2seq: the same for an encoder-decoder: `inputs` = prompt + EOS,
                   `response_k` = response + EOS.

`TASKS` (at the end) is the one table of what the rest of the code knows about each task:
the record kind it reads, its features and their lengths, whether it packs, whether its
`inputs` go to an encoder, which stages train on it, and how one record becomes examples.
Adding a task: its transform and its `Task` entry here (and, for a new stage, that stage's
name in `stages`).
"""


import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from transformer import special_ids
from transformer.special_ids import sentinel_id

NOISE_DENSITY = 0.15
MEAN_SPAN_LENGTH = 3.0

_EOS = np.array([special_ids.EOS_ID], np.int32)


def _ids(*parts: np.ndarray) -> np.ndarray:
  return np.concatenate([np.asarray(p, np.int32).reshape(-1) for p in parts])


def lm_chunks(tokens: np.ndarray, seq_len: int) -> list[dict[str, np.ndarray]]:
  """A document [n] -> [{'targets': [<= seq_len]}, ...]: tokens + EOS cut into consecutive
  chunks."""
  stream = _ids(tokens, _EOS)
  return [{"targets": stream[i : i + seq_len]} for i in range(0, len(stream), seq_len)]


def split_chunks(tokens: np.ndarray, length: int) -> list[np.ndarray]:
  """A document [n] -> consecutive pieces of at most `length` tokens (no EOS; for span
  corruption)."""
  return [tokens[i : i + length] for i in range(0, len(tokens), length)]


def seq2seq(inputs: np.ndarray, targets: np.ndarray,
            max_inputs: int | None = None) -> dict[str, np.ndarray]:
  """(inputs [n], targets [m]) -> {'inputs': [n+1], 'targets': [m+1]}, EOS appended to both.

  max_inputs: if given, inputs longer than that (with EOS) keep their first max_inputs - 1
  tokens (the start of the code: signature and first lines); targets are never cut.
  """
  if max_inputs is not None and len(inputs) + 1 > max_inputs:
    inputs = inputs[:max(max_inputs - 1, 0)]
  return {"inputs": _ids(inputs, _EOS), "targets": _ids(targets, _EOS)}


def prefix_lm(prompt: np.ndarray, target: np.ndarray,
              max_len: int | None = None) -> dict[str, np.ndarray]:
  """(prompt [n], target [m]) -> {'targets', 'targets_weights'} [n+m+1] (weights 0 on the prompt).

  max_len: if given and the sequence is longer, the prompt keeps its first tokens so that it
  fits, when at least one prompt token can stay; the target is never cut (else the example
  stays over-long, and the pipeline skips and counts it).
  """
  room = None if max_len is None else max_len - len(target) - 1
  if room is not None and len(prompt) > room >= 1:
    prompt = prompt[:room]
  return {
      "targets": _ids(prompt, target, _EOS),
      "targets_weights": np.concatenate([np.zeros(len(prompt), np.float32),
                                         np.ones(len(target) + 1, np.float32)]),
  }


def preference(prompt: np.ndarray, *responses: np.ndarray,
               max_len: int | None = None) -> dict[str, np.ndarray]:
  """(prompt, response_0 (best), response_1, ...) -> one sequence per response, for a causal LM.

  Returns {'response_k': prompt + response_k + EOS, 'response_k_weights': 1.0 on the response
  and its EOS} for each k; an empty response k >= 1 (fewer candidates than K) gives an empty
  sequence (all padding, no weights: it takes part in no pair). With `max_len`, a prompt too
  long for the longest response keeps its first tokens (`prefix_lm`); responses are never
  cut, so two different responses stay different.
  """
  room = None if max_len is None else max_len - max(len(r) for r in responses) - 1
  if room is not None and len(prompt) > room >= 1:
    prompt = prompt[:room]
  out = {}
  for k, response in enumerate(responses):
    name = f"response_{k}"
    if len(response) or k == 0:  # an empty best response is a response (EOS only)
      pair = prefix_lm(prompt, response)
      out[name], out[f"{name}_weights"] = pair["targets"], pair["targets_weights"]
    else:
      out[name], out[f"{name}_weights"] = np.zeros(0, np.int32), np.zeros(0, np.float32)
  return out


def preference_seq2seq(prompt: np.ndarray, *responses: np.ndarray,
                       max_inputs: int | None = None) -> dict[str, np.ndarray]:
  """(prompt, response_0 (best), ...) -> {'inputs': prompt + EOS, 'response_k': response + EOS,
  'response_k_weights'}, for an encoder-decoder; `max_inputs` cuts the prompt as `seq2seq`."""
  out = {"inputs": seq2seq(prompt, np.zeros(0, np.int32), max_inputs)["inputs"]}
  for k, response in enumerate(responses):
    name = f"response_{k}"
    out[name] = _ids(response, _EOS) if len(response) or k == 0 else np.zeros(0, np.int32)
    out[f"{name}_weights"] = np.ones(len(out[name]), np.float32)
  return out


def distinct_responses(responses: tuple[np.ndarray, ...]) -> bool:
  """Whether no non-empty response equals the best one (response 0) token for token."""
  return all(not len(r) or not np.array_equal(r, responses[0]) for r in responses[1:])


def _random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
  """Lengths [num_segments] of a uniformly random split of `num_items` into non-empty segments."""
  cuts = np.sort(rng.choice(np.arange(1, num_items), size=num_segments - 1, replace=False))
  return np.diff(np.concatenate([[0], cuts, [num_items]]))


def random_spans_noise_mask(
    length: int, rng: np.random.Generator, noise_density: float = NOISE_DENSITY,
    mean_span_length: float = MEAN_SPAN_LENGTH,
) -> np.ndarray:
  """bool [length]: True on noise tokens; alternating spans, starting with non-noise (as in T5).

  round(length * noise_density) noise tokens (clipped to [1, length - 1]) in
  round(noise / mean_span_length) spans (at least 1); `length` must be >= 2.
  """
  if length < 2:
    raise ValueError(f"span corruption needs at least 2 tokens, got {length}")
  num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
  num_spans = min(max(int(round(num_noise / mean_span_length)), 1), num_noise, length - num_noise)
  noise_lengths = _random_segmentation(num_noise, num_spans, rng)
  keep_lengths = _random_segmentation(length - num_noise, num_spans, rng)
  spans = np.stack([keep_lengths, noise_lengths], axis=1).reshape(-1)
  return np.repeat(np.tile([False, True], num_spans), spans)


def corrupt_spans(
    tokens: np.ndarray, mask: np.ndarray, sentinel: Callable[[int], int] = sentinel_id
) -> dict[str, np.ndarray]:
  """tokens [n], noise mask bool [n] -> {'inputs', 'targets'} with EOS; one sentinel per noise span.

  inputs  = keep_0 S_0 keep_1 S_1 ... EOS;  targets = S_0 noise_0 S_1 noise_1 ... EOS,
  with S_k = sentinel(k), so replacing each S_k in inputs by noise_k gives back tokens.
  """
  span_start = mask & ~np.concatenate([[False], mask[:-1]])
  span_index = np.cumsum(span_start) - 1
  sentinels = np.array([sentinel(k) for k in range(int(span_start.sum()))], np.int32)
  inputs = np.where(span_start, sentinels[np.maximum(span_index, 0)] if len(sentinels) else 0,
                    tokens)
  targets = [_ids([s], tokens[(span_index == k) & mask]) for k, s in enumerate(sentinels)]
  return {"inputs": _ids(inputs[~mask | span_start], _EOS), "targets": _ids(*targets, _EOS)}


def span_corruption(
    tokens: np.ndarray, rng: np.random.Generator, noise_density: float = NOISE_DENSITY,
    mean_span_length: float = MEAN_SPAN_LENGTH, sentinel: Callable[[int], int] = sentinel_id,
) -> dict[str, np.ndarray]:
  """T5 span corruption of tokens [n >= 2]: a random noise mask, then `corrupt_spans`."""
  mask = random_spans_noise_mask(len(tokens), rng, noise_density, mean_span_length)
  return corrupt_spans(tokens, mask, sentinel)


def span_corruption_lengths(
    inputs_length: int, noise_density: float = NOISE_DENSITY,
    mean_span_length: float = MEAN_SPAN_LENGTH,
) -> tuple[int, int]:
  """(raw tokens per chunk, targets length) such that corrupted inputs + EOS fill `inputs_length`
  (T5's helper)."""

  def lengths(n: int) -> tuple[int, int]:
    noise = int(round(n * noise_density))
    spans = int(round(noise / mean_span_length))
    return n - noise + spans + 1, noise + spans + 1

  n = inputs_length - 1
  while lengths(n + 1)[0] <= inputs_length:
    n += 1
  return n, lengths(n)[1]


def lengths_of(example: Mapping[str, np.ndarray]) -> dict[str, int]:
  """Length of each feature of an unpadded example."""
  return {k: len(v) for k, v in example.items()}


def fits(example: Mapping[str, np.ndarray], max_lengths: Mapping[str, int]) -> bool:
  """Whether every feature named in `max_lengths` is at most that long."""
  return all(len(example[k]) <= n for k, n in max_lengths.items())


def pad_example(
    example: Mapping[str, np.ndarray], max_lengths: Mapping[str, int], with_segmentation: bool
) -> dict[str, np.ndarray]:
  """Pads each feature to `max_lengths[key]` with 0 (eval; unpacked).

  With `with_segmentation`, each id feature `k` (not `*_weights`) also gets
  `k_segmentation` [L] (1 on tokens, 0 on padding) and `k_position` [L] (arange).
  """
  out = {}
  for key, value in example.items():
    length = max_lengths[key]
    out[key] = np.pad(value, (0, length - len(value)))
    if with_segmentation and not key.endswith("_weights"):
      out[f"{key}_segmentation"] = (np.arange(length) < len(value)).astype(np.int32)
      out[f"{key}_position"] = np.arange(length, dtype=np.int32)
  return out


# ----------------------------------------------------------------------------- the task table

Examples = Callable[[tuple[np.ndarray, ...], "np.random.Generator | None", Any],
                    list[dict[str, np.ndarray]]]


@dataclasses.dataclass(frozen=True)
class Task:
  """What the rest of the code knows of one data task.

  Attributes:
    name: the `data.task` value.
    kind: the record kind it reads: 'documents' {text}, 'pairs' {inputs, targets} or
      'preferences' {prompt, chosen, rejected (, rejected_2, ...)}.
    encoder: True if its `inputs` go to an encoder (an architecture with `has_encoder`);
      False if the model reads one sequence, `targets` (or each `response_k`).
    stages: the training stages that train on it (`training/stages.py`).
    packable: training rows pack several examples; then every id feature `k` comes with
      `k_segmentation` and `k_position`, in eval batches too.
    random: `examples` draws random numbers (it gets a per-record generator, else None).
    lengths: data config -> the fixed length of every feature of a batch row.
    examples: (token arrays of one record's fields, rng, data config) -> its unpadded examples.
    model_calls: how a batch feeds the model: one mapping per forward pass, from the model's
      sequence ('inputs', 'targets') to the batch feature read for it ('response_*': one
      pass per response feature of the batch).
  """

  name: str
  kind: str
  encoder: bool
  stages: tuple[str, ...]
  packable: bool
  random: bool
  lengths: Callable[[Any], dict[str, int]]
  examples: Examples
  model_calls: tuple[Mapping[str, str], ...]

  def id_features(self, cfg: Any) -> tuple[str, ...]:
    """The token-id features of a batch row (not the `*_weights`, segmentation or positions)."""
    return tuple(k for k in self.lengths(cfg) if not k.endswith("_weights"))

  def has_targets(self, cfg: Any) -> bool:
    """Its batches hold `targets` (end-of-run samples decode from them; a preference task's
    hold `response_k` instead)."""
    return "targets" in self.lengths(cfg)


def _lm_lengths(cfg: Any) -> dict[str, int]:
  return {"targets": cfg.seq_len}


def _prefix_lm_lengths(cfg: Any) -> dict[str, int]:
  return {"targets": cfg.seq_len, "targets_weights": cfg.seq_len}


def _preference_lengths(cfg: Any) -> dict[str, int]:
  return {f"response_{k}{suffix}": cfg.seq_len for k in range(cfg.num_responses)
          for suffix in ("", "_weights")}


def _preference_seq2seq_lengths(cfg: Any) -> dict[str, int]:
  lengths = {"inputs": cfg.seq_len}
  lengths.update({f"response_{k}{suffix}": cfg.targets_len or cfg.seq_len
                  for k in range(cfg.num_responses) for suffix in ("", "_weights")})
  return lengths


def _seq2seq_lengths(cfg: Any) -> dict[str, int]:
  return {"inputs": cfg.seq_len, "targets": cfg.targets_len or cfg.seq_len}


def _span_lengths(cfg: Any) -> dict[str, int]:
  targets_len = cfg.targets_len or span_corruption_lengths(
      cfg.seq_len, cfg.noise_density, cfg.mean_span_length)[1]
  return {"inputs": cfg.seq_len, "targets": targets_len}


def _lm_examples(fields, rng, cfg) -> list[dict[str, np.ndarray]]:
  del rng
  return lm_chunks(fields[0], cfg.seq_len)


def _span_examples(fields, rng, cfg) -> list[dict[str, np.ndarray]]:
  raw, _ = span_corruption_lengths(cfg.seq_len, cfg.noise_density, cfg.mean_span_length)
  return [span_corruption(chunk, rng, cfg.noise_density, cfg.mean_span_length)
          for chunk in split_chunks(fields[0], raw) if len(chunk) >= 2]


def _seq2seq_examples(fields, rng, cfg) -> list[dict[str, np.ndarray]]:
  del rng
  return [seq2seq(*fields, max_inputs=cfg.seq_len if cfg.truncate_inputs else None)]


def _prefix_lm_examples(fields, rng, cfg) -> list[dict[str, np.ndarray]]:
  del rng
  return [prefix_lm(*fields, max_len=cfg.seq_len if cfg.truncate_inputs else None)]


def fitting_responses(responses: tuple[np.ndarray, ...], room: int) -> tuple[np.ndarray, ...]:
  """`responses` with each rejected one (k >= 1) longer than `room` tokens made empty (its
  pairs are dropped); the best one is kept whatever its length (the example is then over-long,
  and the pipeline skips and counts it)."""
  return responses[:1] + tuple(r if len(r) <= room else r[:0] for r in responses[1:])


def _preference_responses(fields, rng, cfg, room: int) -> tuple[np.ndarray, ...] | None:
  """The K responses of a record that fit in `room` tokens, or None when one repeats the best
  or (K >= 2) none of the rejected ones is left: no pair to learn from, the record is dropped.
  K = 1 (one response to score) keeps the record.

  The rejected ones are the record's first K - 1; with `cfg.rejected_pool` and a generator
  (training), K - 1 drawn without replacement from the first `rejected_pool` that fit, in
  their stored order (fewer if fewer fit: the rest are empty).
  """
  chosen, rejected = fields[1], tuple(fields[2:])
  if rng is not None and cfg.rejected_pool:
    pool = [r for r in rejected[:cfg.rejected_pool] if 0 < len(r) <= room]
    drawn = np.sort(rng.choice(len(pool), min(cfg.num_responses - 1, len(pool)), replace=False))
    empty = (np.zeros(0, np.int32),) * (cfg.num_responses - 1 - len(drawn))
    rejected = tuple(pool[i] for i in drawn) + empty
  responses = (chosen, *rejected[:cfg.num_responses - 1])
  if not distinct_responses(responses):
    return None
  responses = fitting_responses(responses, room)
  return responses if len(responses) == 1 or any(len(r) for r in responses[1:]) else None


def _preference_examples(fields, rng, cfg) -> list[dict[str, np.ndarray]]:
  responses = _preference_responses(fields, rng, cfg, cfg.seq_len - 2)  # EOS, 1 prompt token
  if responses is None:
    return []
  return [preference(fields[0], *responses, max_len=cfg.seq_len if cfg.truncate_inputs else None)]


def _preference_seq2seq_examples(fields, rng, cfg) -> list[dict[str, np.ndarray]]:
  responses = _preference_responses(fields, rng, cfg, (cfg.targets_len or cfg.seq_len) - 1)  # EOS
  if responses is None:
    return []
  return [preference_seq2seq(fields[0], *responses,
                             max_inputs=cfg.seq_len if cfg.truncate_inputs else None)]


_TARGETS = ({"targets": "targets"},)
_INPUTS_TARGETS = ({"inputs": "inputs", "targets": "targets"},)
# `response_*`: one forward pass per response feature of the batch (K of them).
_RESPONSES = ({"targets": "response_*"},)
_INPUTS_RESPONSES = ({"inputs": "inputs", "targets": "response_*"},)

TASKS: Mapping[str, Task] = {task.name: task for task in (
    Task("lm", "documents", encoder=False, stages=("pretrain", "finetune"), packable=True,
         random=False, lengths=_lm_lengths, examples=_lm_examples, model_calls=_TARGETS),
    Task("span_corruption", "documents", encoder=True, stages=("pretrain",), packable=True,
         random=True, lengths=_span_lengths, examples=_span_examples, model_calls=_INPUTS_TARGETS),
    Task("seq2seq", "pairs", encoder=True, stages=("finetune",), packable=True, random=False,
         lengths=_seq2seq_lengths, examples=_seq2seq_examples, model_calls=_INPUTS_TARGETS),
    Task("prefix_lm", "pairs", encoder=False, stages=("finetune",), packable=True, random=False,
         lengths=_prefix_lm_lengths, examples=_prefix_lm_examples, model_calls=_TARGETS),
    Task("preference", "preferences", encoder=False, stages=("reward", "dpo", "policy"),
         packable=False, random=True, lengths=_preference_lengths, examples=_preference_examples,
         model_calls=_RESPONSES),
    Task("preference_seq2seq", "preferences", encoder=True, stages=("reward", "dpo", "policy"),
         packable=False, random=True, lengths=_preference_seq2seq_lengths,
         examples=_preference_seq2seq_examples, model_calls=_INPUTS_RESPONSES),
)}


def get_task(name: str) -> Task:
  """The Task called `name`; ValueError naming the field and the choices otherwise."""
  if name not in TASKS:
    raise ValueError(f"data.task: got {name!r}, expected one of {tuple(TASKS)}")
  return TASKS[name]
